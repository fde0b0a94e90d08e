"""The delivery daemon (``pktx daemon``): a provider's node takes the jobs the broker awarded to
its provider, delivers each with the engine, and reports usage exactly once.

- `state`: what the daemon must not forget across a SIGKILL (its jobs, their fencing tokens,
  the reports not yet acknowledged), in a local SQLite file.
- `broker_client`: the broker's HTTP API for daemons, with retries that wait the broker out.
- `runs`: one job's delivery, a ``pktx deliver`` child process, and what it has delivered.
- `node`: the loop that claims, runs, heartbeats, reports, completes and drains.

docs/daemon.md has the protocol and what happens on each failure.
"""
