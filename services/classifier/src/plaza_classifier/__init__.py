"""Plaza classifier: decides what each post is about, where it is, its language and its urgency."""
