"""Learned first-poll timing: poll each job about when it should be done, so most need one call."""

from __future__ import annotations

from ._polling import PollPolicy

__all__ = ["PollTimer"]

UNKNOWN_DURATION_S = 2.0
_ETA_START = 0.5  # step size of the first observations (log-ratio units)
_ETA_HALF = 16.0  # observations after which the step has halved
_ETA_FLOOR = 0.02  # step size once settled: small enough to be quiet, large enough to follow drift
_EXPLORE = 0.4  # how much earlier than the estimate the very first jobs poll
_EXPLORE_UNTIL = 16  # observations after which no job polls early on purpose
_STREAK = 4  # hits in a row after which downward steps grow (the estimate is likely too high)
_JITTER = 0.02
LATE_SHARE = 0.25  # a slow job's result comes at most this share of its processing time late


class PollTimer:
    """Tracks a quantile of processing seconds per audio second and times first polls by it."""

    def __init__(
        self,
        prior_ratio: float = 0.5,
        quantile: float = 0.9,
        retry_fraction: float = 0.1,
        min_delay_s: float = 0.05,
    ) -> None:
        if prior_ratio <= 0 or not 0 < quantile < 1 or retry_fraction <= 0 or min_delay_s < 0:
            raise ValueError(
                "PollTimer needs prior_ratio > 0, 0 < quantile < 1, retry_fraction > 0"
            )
        self._ratio = prior_ratio
        self.quantile = quantile
        self.retry_fraction = retry_fraction
        self.min_delay_s = min_delay_s
        self.observations = 0
        self._streak = 0

    def __repr__(self) -> str:
        return f"PollTimer(ratio={self._ratio:.3f}, observations={self.observations})"

    @property
    def ratio(self) -> float:
        """Current estimate: the quantile of processing time over audio duration."""
        return self._ratio

    def policy(
        self, duration_s: float | None, *, timeout_s: float, max_delay_s: float
    ) -> PollPolicy:
        """First poll when the job is likely done; after a miss, poll again soon, then back off,
        never waiting more than a quarter of the job's age once it is past its expected time
        (see ``PollPolicy.age_share``): a job 4x slower than expected is at most 25 % late."""
        audio_s = duration_s or UNKNOWN_DURATION_S
        expected = audio_s * self._ratio
        first = self._clamp(expected * (1 - self._exploring()), max_delay_s)
        retry = max(self.retry_fraction * first, expected - first + self.retry_fraction * first)
        return PollPolicy(
            timeout_s=timeout_s,
            first_delay_s=first,
            max_delay_s=max_delay_s,
            jitter=_JITTER,
            next_delay_s=self._clamp(retry, max_delay_s),
            age_share=LATE_SHARE,
            age_floor_s=expected,
        )

    def observe(
        self,
        duration_s: float | None,
        first_poll_terminal: bool,
        *,
        first_delay_s: float | None = None,
    ) -> None:
        """Learn from one job's first poll; pass the policy's ``first_delay_s`` when known.

        With ``first_delay_s`` an outcome that says nothing about the current estimate (a hit
        polled later than it, a miss polled earlier) is counted but does not move it: jobs
        finish in bursts, and stale outcomes would otherwise overshoot.
        """
        if not duration_s or duration_s <= 0:
            return
        tested = self._ratio if first_delay_s is None else first_delay_s / duration_s
        eta = self._eta()
        self.observations += 1
        self._learn(tested, first_poll_terminal, eta)

    def observe_retry(self, duration_s: float | None, terminal: bool, policy: PollPolicy) -> None:
        """Learn from the second poll of a job this timer's ``policy`` polled first while
        exploring, earlier than the estimate then: that miss taught nothing, and a prior set too
        low would otherwise cost every early job a string of polls. Not counted again."""
        if not duration_s or duration_s <= 0 or policy.next_delay_s is None:
            return
        if policy.first_delay_s >= policy.age_floor_s * (1 - 1e-9):  # polled at the estimate
            return
        tested = (policy.first_delay_s + policy.next_delay_s) / duration_s
        self._learn(tested, terminal, self._eta())

    def _learn(self, tested: float, first_poll_terminal: bool, eta: float) -> None:
        """Move the estimate on a hit at or before it, or a miss at or after it."""
        if first_poll_terminal and tested <= self._ratio * (1 + 1e-9):
            self._streak += 1
            boost = max(1.0, self._streak / _STREAK)
            self._ratio *= max(0.5, 1 - eta * (1 - self.quantile) * boost)
        elif not first_poll_terminal and tested >= self._ratio * (1 - 1e-9):
            self._streak = 0
            self._ratio *= 1 + eta * self.quantile

    def _eta(self) -> float:
        """Large steps while little is known, decaying to a floor."""
        return max(_ETA_FLOOR, _ETA_START / (1 + self.observations / _ETA_HALF))

    def _exploring(self) -> float:
        """Fraction by which first polls come early while the estimate is still the prior."""
        return _EXPLORE * max(0.0, 1 - self.observations / _EXPLORE_UNTIL)

    def _clamp(self, delay_s: float, max_delay_s: float) -> float:
        """Keep a delay within [min_delay_s, max_delay_s]."""
        return min(max(delay_s, self.min_delay_s), max_delay_s)
