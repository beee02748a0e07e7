"""The lab's vocabulary, each fact defined once: load modes, step statuses, levels and axes,
the one record of a measured step and its ``results.csv`` codec. Everything else imports it."""
