"""The fit stage: EK-FAC factors of the units' blocks (``ekfac``: two passes over a subsample;
``shared_pass``: the whole-window variant whose second pass is shared with scoring) and their math
and file format (``factors``)."""
