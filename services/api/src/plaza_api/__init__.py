"""Plaza gateway: Open311 GeoReport v2 for civic developers and the manager API."""
