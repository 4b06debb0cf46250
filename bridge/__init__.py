"""drbridge: OpenADR 2.0b demand response to OCPP smart charging."""
