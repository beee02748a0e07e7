"""``benchlab run --profile``: a py-spy profile behind every figure, and CPU per request by component.

``components`` holds the one table of components and the attribution rule, ``speedscope`` reads
what py-spy wrote, ``breakdown`` turns it into ``profile.csv``, ``pyspy`` finds, checks and runs the
profiler, ``step`` is the profiled step the runner adds after a test, ``flamegraph`` draws the SVG,
``section`` and ``diff`` show the figures in the report and in the terminal.
"""
