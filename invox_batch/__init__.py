"""invox-batch: batch transcription of clinical audio through Invox, orchestrated by Prefect."""
