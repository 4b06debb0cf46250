"""The OCPP edge: stations connect here, and only here is OCPP spoken."""
