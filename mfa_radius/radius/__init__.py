"""The RADIUS front: wire format, clients, duplicates, challenges, password backends, packet
loop."""
