"""Local servers that speak the social platforms' documented APIs, started by the tests."""
