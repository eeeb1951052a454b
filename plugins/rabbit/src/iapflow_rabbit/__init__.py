"""iapflow messaging backend ``rabbit``: the queue API on RabbitMQ through aio-pika."""
