"""moments: a streaming key-moment detector for a mobile operator's retention teams."""

__version__ = "0.1.0"
