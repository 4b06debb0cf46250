"""The OCPP edge: stations connect here, and only here is OCPP spoken."""

import ocpp.messages

# The ocpp library validates each message in a thread by default; the hop costs
# more than the validation itself, which still runs, inline.
ocpp.messages.ASYNC_VALIDATION = False
