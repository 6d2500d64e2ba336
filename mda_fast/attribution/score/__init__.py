"""The score stage: one captured model pass per batch (``forward``), the probe-side queries
(``queries``) and the one inner-product scorer every score of every stage goes through
(``scorer``: one batch loop, one scatter, one store path; projections by op 1, contractions by op 2)."""
