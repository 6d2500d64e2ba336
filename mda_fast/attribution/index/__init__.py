"""The per-row gradient index: built in one pass (``build``), in whitened and compressed EK-FAC
coordinates (``basis``), stored in resumable chunks (``store``), queried in seconds (``query``)."""
