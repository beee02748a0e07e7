"""The report of a run: sections and charts that render its analysis (``analysis.Analysis``)."""
