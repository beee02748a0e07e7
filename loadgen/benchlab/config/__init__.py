"""What a user configures: scenarios, claims and the ``BENCHLAB_*`` settings, each read and
checked in one place before anything starts."""
