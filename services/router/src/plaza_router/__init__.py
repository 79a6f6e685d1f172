"""Plaza router: opens a request for each actionable post and puts it in its district's queue."""
