"""snapshotter: a nightly batch CLI that caches daily closes and builds portfolio snapshots."""

__version__ = "0.1.0"
