"""A retrieved context of about 450 MiniLM tokens for the RAG adapter tests (a helper module)."""

from __future__ import annotations

CHUNKS = [
    "Larkspur Home ships to the United Kingdom, Ireland and most of the European Union. "
    "Standard delivery takes three to five working days and is free on orders over 60 pounds; "
    "below that it costs 4.95 pounds. Express delivery arrives the next working day when you "
    "order before 1 pm and costs 9.95 pounds.",
    "You can return most items within thirty days of delivery for a full refund, as long as "
    "they are unused and in their original packaging. Bedding, cushions and anything made to "
    "measure cannot be returned unless faulty. Start a return from Your orders; we email a "
    "prepaid label. Return postage is free for faulty items and costs 3.50 pounds otherwise.",
    "Refunds go back to the original payment method within five working days after the "
    "returned item reaches our warehouse. Gift card purchases are refunded as a new gift card. "
    "If you paid with a buy-now-pay-later provider, the refund is sent to that provider.",
    "Orders can be changed or cancelled free of charge until they are packed, usually within "
    "two hours of ordering. After that, an order can no longer be cancelled, but you can refuse "
    "the delivery or return the items. Furniture orders can be cancelled up to seven days "
    "before the delivery date you picked.",
    "Our products carry a two-year guarantee against manufacturing faults. Sofas and bed "
    "frames are guaranteed for five years on the frame and two years on the upholstery. The "
    "guarantee does not cover wear and tear, fading from sunlight, or damage from misuse.",
    "Larkspur Home is run by its chief executive, Dana Whitfield, from offices in Leeds. "
    "Customer service is open every day from 8 am to 8 pm by chat and by phone.",
]
CONTEXT = "\n\n".join(CHUNKS)
OTHER_CONTEXT = (
    "Birch and Bay accepts returns within fourteen days of delivery. Items must be unused, "
    "with tags attached. Return shipping is always paid by the customer, and sale items are "
    "final. Refunds are issued as store credit only.\n\n" + "\n\n".join(CHUNKS[2:])
)
QUESTION = "How many days do I have to return an item?"
REWORDED = "How long do I have to send an item back?"
OTHER_QUESTION = "Who is the chief executive of the company?"
