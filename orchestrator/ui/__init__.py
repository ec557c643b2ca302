"""What the operator sees: logging with secrets redacted, the summary table, the live
progress line, the metrics files, escaping of outside text, and stdout that may go away."""
