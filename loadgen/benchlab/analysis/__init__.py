"""A recorded run read back and analysed once: points, peaks, noise, the answers, the
decomposition, the sustainable rate, scaling along the swept axes."""
