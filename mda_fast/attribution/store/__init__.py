"""Scores on disk and what is read from them: the resumable score store and its table
(``scores``), the top rows decoded with their figures (``top``), a window scored in parts by
independent jobs and merged (``parts``)."""
