"""The OpenAI wire format on our side: request validation, hints, response shapes."""
