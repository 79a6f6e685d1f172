"""Plaza notifier: words and posts the public replies to citizens."""
