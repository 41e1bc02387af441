"""The pure calculation core: no asyncio, Redis or HTTP in here."""
