"""What one attribution run works on: the run context (model, units, probes, settings) built and
checked once (``context``, ``inputs``), every knob by stage (``settings``), what each stage output
was computed from (``identity``), and the ranks (``dist``)."""
