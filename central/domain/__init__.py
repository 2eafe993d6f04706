"""Pure rules with no I/O: timetables and their time zones, room environments and verdict
inputs, the check-in policy, address parsing.

May import: the standard library and edge_agent.protocol only."""
