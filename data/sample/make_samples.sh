#!/usr/bin/env bash
# Regenerates the committed sample recordings and manifest.csv in this folder.
#
# Run once by hand (not by the build or the tests):  bash data/sample/make_samples.sh
# Needs Debian's espeak-ng and sox (with libsox-fmt-all for ogg/vorbis).
# Output: 16 kHz mono 16-bit speech; visit-001..006 as WAV, visit-007 as FLAC,
# visit-008 as OGG Vorbis, so several containers are exercised.
#
# These sentences are the ASR test set: they must NOT be copied into
# sandbox/lm/corpus.txt (tests/test_asr.py checks that).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

voice="en-us"
speed=150 # words per minute; espeak-ng's default is 175

# file_id|extension|clinic|recorded_on|sentence
samples=(
  "visit-001|wav|cardiology|2024-03-04|The patient reports chest pain radiating to the left arm since yesterday morning."
  "visit-002|wav|cardiology|2024-03-04|Blood pressure is one hundred forty over ninety and the heart rate is regular."
  "visit-003|wav|general practice|2024-03-05|She denies fever, chills, nausea or vomiting over the past three days."
  "visit-004|wav|endocrinology|2024-03-05|Continue metformin five hundred milligrams twice daily with meals."
  "visit-005|wav|orthopedics|2024-03-06|The wound on the right knee is healing well with no signs of infection."
  "visit-006|wav|general practice|2024-03-06|He has a history of type two diabetes and high cholesterol."
  "visit-007|flac|pulmonology|2024-03-07|Lungs are clear to auscultation bilaterally with no wheezing."
  "visit-008|ogg|general practice|2024-03-07|Follow up in the clinic in two weeks with repeat blood tests."
)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

manifest="manifest.csv"
echo "audio_path,file_id,clinic,recorded_on,reference_text" >"$manifest"

for row in "${samples[@]}"; do
  IFS='|' read -r file_id ext clinic recorded_on sentence <<<"$row"
  out="${file_id}.${ext}"
  espeak-ng -v "$voice" -s "$speed" -w "$tmp/raw.wav" "$sentence"
  # Resample to the rate pocketsphinx's acoustic model expects; keep it mono 16-bit.
  sox "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$tmp/16k.wav"
  case "$ext" in
  wav) cp "$tmp/16k.wav" "$out" ;;
  flac) sox "$tmp/16k.wav" -C 8 "$out" ;;
  ogg) sox "$tmp/16k.wav" -t vorbis -C 5 "$out" ;;
  esac
  # Reference: lowercase, punctuation removed, single spaces.
  reference="$(printf '%s' "$sentence" | tr '[:upper:]' '[:lower:]' | tr -d '.,;:?!' | tr -s ' ')"
  echo "${out},${file_id},${clinic},${recorded_on},${reference}" >>"$manifest"
  printf '%s  %ss\n' "$out" "$(soxi -D "$out")"
done
