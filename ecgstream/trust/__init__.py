"""Input trust: message authentication of ECG chunks, attempt limits, the daemon's trust hooks."""
