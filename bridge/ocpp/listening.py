"""How the OCPP edge listens: the pending connections the kernel keeps for it."""

# A site reboot brings every station back at once. While the event loop is busy with the
# stations it accepted, the others wait in the kernel's queue; when it is full, a new
# connection is dropped and tried again by its station 1 s later, then 3 s. In a
# 5,000-station storm at 2,048, 286 stations connected 3.3-3.4 s after they began, found
# the room under the site limit split among the others (0 W until the plan) and held their
# limits 1.5 s after the rest. asyncio's default is 100. Linux caps the queue at
# net.core.somaxconn, 4096 by default since kernel 5.4.
BACKLOG = 4096
