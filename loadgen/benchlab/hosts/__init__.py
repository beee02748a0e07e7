"""The lab across Docker hosts: ``benchlab run --hosts db=URL,targets=URL``.

TechEmpower runs the database, the servers and the load generator on three machines so that
none steals CPU or memory bandwidth from another. Here each role's host is a Docker endpoint
(``ssh://user@host``, ``tcp://host:2376`` with TLS, ``unix:///path``) driven through Docker's
own API (the ``docker`` SDK): images built once and loaded where missing, containers started
with host networking on the address and CPU set given, waited for, sampled on their own host,
recorded in run.json and removed from every host however the run ends. The load generator is
this process, on the machine that runs the command (``loadgen=URL`` is refused: see spec.py).

Modules: ``spec`` (the options, checked), ``engine`` (one host's Docker engine), ``lab`` (the
roles started, watched and removed; what run.json records), ``network`` (round-trip times).
"""
