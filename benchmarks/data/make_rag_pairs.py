"""Writes rag_pairs.jsonl: labelled RAG-shaped prompt pairs for the long-text benchmark.

Every chunk, question and paraphrase below was written by hand for this project (fictional
companies and a fictional library; no third-party text). A context is a list of retrieved
chunks; a pair is two (context, question) prompts and whether one answer serves both.
Kinds: ``same_q_same_ctx`` (the question reworded, same context: should hit),
``diff_q_same_ctx`` (another question over the same context: must miss),
``same_q_diff_ctx`` (the same question over another context, whose facts differ: must miss),
``detail_q_same_ctx`` (the question differs in one answer-determining detail: must miss).

    python benchmarks/data/make_rag_pairs.py   # rewrites benchmarks/data/rag_pairs.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path

# ---- support: a note-taking app ----------------------------------------------------------------
SUPPORT = [
    "Nimbus Notes syncs every notebook across devices through your Nimbus account. Sync runs "
    "automatically every five minutes while the app is open, and immediately after you save a "
    "note. If a device has been offline, it uploads its local changes first and then downloads "
    "changes made elsewhere. When the same note was edited on two devices while both were "
    "offline, Nimbus keeps both versions and marks the newer one as a conflict copy, so nothing "
    "is lost. You can see the time of the last successful sync at the bottom of the sidebar.",
    "To reset your password, open the sign-in screen and choose Forgot password. Enter the "
    "email address of your Nimbus account and we will send a reset link that stays valid for "
    "two hours. The link can be used once. If the email does not arrive within ten minutes, "
    "check your spam folder and make sure the address is the one you registered with. Accounts "
    "that sign in with a company identity provider cannot reset their password in Nimbus; ask "
    "your workspace administrator instead.",
    "Two-factor authentication adds a second step to every sign-in. Turn it on under Settings, "
    "Security, Two-factor. Nimbus supports authenticator apps and hardware security keys; text "
    "messages are not supported. When you enable it, Nimbus shows ten recovery codes. Each code "
    "works once, and you should store them somewhere safe, because support staff cannot turn "
    "off two-factor authentication for you without proof of identity, which takes up to five "
    "business days.",
    "Deleted notes move to the Trash, where they stay for thirty days before they are removed "
    "for good. To restore a note, open Trash, select the note and choose Restore; it returns "
    "to its original notebook, or to Inbox if that notebook no longer exists. Emptying the "
    "Trash by hand deletes the notes immediately and cannot be undone. Workspace owners on the "
    "Team plan can restore notes deleted by any member for up to ninety days from the admin "
    "console.",
    "Nimbus Notes can export a single note or a whole notebook. Notes export as Markdown, PDF "
    "or HTML; a notebook exports as a zip file containing one Markdown file per note plus an "
    "attachments folder. Exports keep tags as front matter at the top of each Markdown file. "
    "Handwritten sketches are exported as PNG images. Large notebooks are prepared in the "
    "background, and we email you a download link that expires after seven days.",
    "Offline mode lets you read and edit notes without a connection. On the desktop apps, all "
    "notebooks are available offline by default. On phones and tablets only notebooks marked "
    "Keep offline are stored on the device, to save space. Attachments larger than 50 MB are "
    "never stored offline. Changes made offline are saved on the device and uploaded the next "
    "time the app connects.",
]
# another vendor's help pages: same kind of questions, different facts
SUPPORT_OTHER = [
    "Quill Pad keeps your pages in sync through Quill Cloud. Sync happens when you close a "
    "page and otherwise once an hour. Edits made on two devices at the same time are merged "
    "paragraph by paragraph; when a paragraph was changed on both, the version from the device "
    "that synced last wins and the other is discarded. The sync status icon in the toolbar "
    "turns orange when a device has not synced for more than a day.",
    "Forgot your Quill Pad password? Choose Need help signing in on the login page, then enter "
    "your phone number or email. We send a six-digit code that expires after fifteen minutes. "
    "After three wrong codes the account is locked for one hour. Business accounts managed by "
    "an administrator can also reset passwords from the admin dashboard.",
    "Pages you delete in Quill Pad are kept in Recently deleted for fourteen days. After that "
    "they are erased permanently and cannot be recovered, even by support. To bring a page "
    "back, open Recently deleted, press and hold the page and choose Put back.",
]
SUPPORT_Q = {
    "sync": ("How often does the app sync my notes?", "How frequently are my notes synced?"),
    "reset": (
        "How do I reset my password?",
        "What are the steps to reset my password?",
    ),
    "trash": (
        "How long do deleted notes stay in the trash?",
        "How many days are deleted notes kept in the trash?",
    ),
    "2fa": (
        "Can I use text messages for two-factor authentication?",
        "Is SMS supported as a two-factor authentication method?",
    ),
    "export": (
        "Which formats can I export a note to?",
        "What file formats can a note be exported as?",
    ),
}

# ---- billing: a cloud hosting provider ---------------------------------------------------------
BILLING = [
    "Corvid Cloud bills every account monthly, on the same day of the month that the account "
    "was created. The invoice covers the previous month of usage: compute hours, storage, and "
    "outbound data transfer. Invoices are emailed to the billing contact and are also "
    "available under Billing, Invoices, as PDF and CSV. Prices on the invoice are in US "
    "dollars unless the account was opened with a euro billing address.",
    "Accepted payment methods are credit and debit cards (Visa, Mastercard, American Express) "
    "and, for accounts that spend more than 2,000 dollars a month, bank transfer against an "
    "invoice with thirty-day payment terms. PayPal and prepaid cards are not accepted. A card "
    "payment that fails is retried after three days and again after seven days.",
    "If a payment is still outstanding fourteen days after the invoice date, the account is "
    "suspended: running servers are stopped but no data is deleted. Paying the balance lifts "
    "the suspension within an hour. Accounts that stay suspended for sixty days are closed, and "
    "their data is deleted thirty days after closure.",
    "Refunds are given as account credit, not returned to the card, except when an account is "
    "closed, in which case any remaining credit above 10 dollars is refunded to the original "
    "payment method within ten business days. Credits expire twelve months after they are "
    "issued. Service-level credits for downtime are applied automatically to the next invoice.",
    "To change the billing contact or the company name printed on invoices, go to Billing, "
    "Settings. Changes apply to the next invoice; past invoices cannot be reissued with a new "
    "name. A VAT or GST number can be added in the same place, and from the next invoice on, "
    "tax is reverse-charged for business customers in the European Union.",
    "Every account can set a monthly budget with alerts at 50, 80 and 100 percent of the "
    "amount. Alerts are emails by default and can also be sent to a webhook. A budget never "
    "stops resources by itself; to cap spending, attach a spending limit, which stops compute "
    "resources when it is reached while keeping storage.",
]
BILLING_OTHER = [
    "Pelican Host charges in advance: each plan is billed on the first day of the month for "
    "the month ahead, and usage above the plan's allowance is added to the following invoice. "
    "Invoices are sent as PDF only and can be downloaded for the past three years.",
    "Pelican Host accepts PayPal, credit cards and SEPA direct debit. Failed payments are "
    "retried daily for five days. An account with an unpaid invoice is suspended after seven "
    "days and deleted after thirty days, including backups.",
    "Pelican Host refunds unused prepaid months to the original payment method when a plan is "
    "cancelled within the first thirty days; after that, cancellations take effect at the end "
    "of the billing period and nothing is refunded.",
]
BILLING_Q = {
    "suspend": (
        "When is an account suspended for an unpaid invoice?",
        "How long after an unpaid invoice does the account get suspended?",
    ),
    "paypal": ("Can I pay with PayPal?", "Is PayPal accepted as a payment method?"),
    "refund": (
        "How are refunds paid out?",
        "In what form do I receive a refund?",
    ),
    "invoice_day": (
        "On which day of the month am I billed?",
        "What day of the month is my account invoiced?",
    ),
    "budget": (
        "Does a budget stop my servers when it is reached?",
        "Will my servers be stopped once the budget is reached?",
    ),
}

# ---- retail: a home-goods web shop -------------------------------------------------------------
RETAIL = [
    "Larkspur Home ships to the United Kingdom, Ireland and most of the European Union. "
    "Standard delivery takes three to five working days and is free on orders over 60 pounds; "
    "below that it costs 4.95 pounds. Express delivery arrives the next working day when you "
    "order before 1 pm and costs 9.95 pounds. Large furniture is delivered by a two-person team "
    "on a day you choose, for a flat fee of 39 pounds.",
    "You can return most items within thirty days of delivery for a full refund, as long as "
    "they are unused and in their original packaging. Bedding, cushions and anything made to "
    "measure cannot be returned unless faulty. Start a return from Your orders; we email a "
    "prepaid label. Return postage is free for faulty items and costs 3.50 pounds otherwise, "
    "deducted from the refund.",
    "Refunds go back to the original payment method within five working days after the "
    "returned item reaches our warehouse. Gift card purchases are refunded as a new gift card. "
    "If you paid with a buy-now-pay-later provider, the refund is sent to that provider, which "
    "then updates your payment plan.",
    "Orders can be changed or cancelled free of charge until they are packed, usually within "
    "two hours of ordering. After that, an order can no longer be cancelled, but you can refuse "
    "the delivery or return the items. Furniture orders can be cancelled up to seven days "
    "before the delivery date you picked.",
    "Our products carry a two-year guarantee against manufacturing faults. Sofas and bed "
    "frames are guaranteed for five years on the frame and two years on the upholstery. The "
    "guarantee does not cover wear and tear, fading from sunlight, or damage from misuse. To "
    "make a claim, send photos of the fault and your order number through the help centre.",
    "Larkspur Rewards members collect one point per pound spent. Every 500 points become a "
    "5-pound voucher, issued automatically at the start of the next month. Points expire two "
    "years after they are earned. Members also get early access to the seasonal sale and free "
    "standard delivery on every order.",
]
RETAIL_OTHER = [
    "Birch and Bay accepts returns within fourteen days of delivery. Items must be unused, with "
    "tags attached. Return shipping is always paid by the customer, and sale items are final. "
    "Refunds are issued as store credit only.",
    "Birch and Bay delivers within the United Kingdom only. Standard delivery costs 5.99 pounds "
    "and takes up to seven working days; there is no free delivery threshold. Next-day delivery "
    "is available in London for 12 pounds.",
    "Birch and Bay orders cannot be changed once they are placed. You may cancel within one "
    "hour by phone; after that, please wait for the delivery and return the items.",
]
RETAIL_Q = {
    "return_window": (
        "How many days do I have to return an item?",
        "How long do I have to send an item back?",
    ),
    "free_delivery": (
        "Is standard delivery free?",
        "Do I have to pay for standard delivery?",
    ),
    "cancel": (
        "Can I cancel my order after placing it?",
        "Is it possible to cancel an order once it has been placed?",
    ),
    "refund_time": (
        "How long does it take to get my refund?",
        "How soon will I receive my refund?",
    ),
    "guarantee": (
        "How long is the guarantee on a sofa?",
        "What guarantee period applies to sofas?",
    ),
}

# ---- travel: an airline ------------------------------------------------------------------------
TRAVEL = [
    "Every Skylark Air ticket includes one small personal item that fits under the seat, up to "
    "40 by 30 by 15 centimetres. Light fares include no cabin bag; Classic and Flex fares include "
    "one cabin bag of up to 8 kilograms in the overhead locker. Checked bags can be added to any "
    "fare: 20 kilograms costs 25 euros online or 45 euros at the airport.",
    "You can change the date or time of a Skylark Air flight in Manage booking up to two hours "
    "before departure. Flex fares change for free; Classic fares pay a change fee of 40 euros "
    "per passenger per flight; Light fares cannot be changed. In every case you also pay any "
    "difference in fare if the new flight is more expensive.",
    "Online check-in opens 48 hours before departure and closes 90 minutes before departure. "
    "Passengers who do not check in online can check in at the airport desk for a fee of 30 "
    "euros. Bag drop closes 45 minutes before departure, and the gate closes 20 minutes before "
    "departure; passengers who arrive later are not allowed to board.",
    "If your flight is cancelled, you can choose a free rebooking on the next available Skylark "
    "Air flight or a full refund to the original payment method, paid within seven days. When "
    "the cancellation is announced less than fourteen days before departure and was within our "
    "control, you may also be entitled to compensation under EU rules.",
    "Passengers travelling with pets may bring one cat or small dog in the cabin, in a soft "
    "carrier weighing no more than 8 kilograms including the animal. Pets must be booked at "
    "least 48 hours before departure and cost 50 euros per flight. Larger animals cannot travel "
    "with Skylark Air, except assistance dogs, which fly free.",
    "Children under two travel on an adult's lap for a fee of 25 euros per flight. From their "
    "second birthday, children need their own seat and pay the adult fare. Unaccompanied minors "
    "are accepted from the age of eight on direct flights only, with an escort service that "
    "costs 60 euros per flight.",
]
TRAVEL_OTHER = [
    "Albatross Airways allows one cabin bag of up to 10 kilograms on every fare, plus a small "
    "handbag. The first checked bag of 23 kilograms is included on all international flights; "
    "additional bags cost 60 dollars each.",
    "Albatross Airways tickets can be changed at any time before departure for a fee of 75 "
    "dollars, and basic fares can be changed for 120 dollars. Changes within 24 hours of "
    "departure are only possible at the airport.",
    "Check-in with Albatross Airways opens 24 hours before departure online and three hours "
    "before departure at the airport. The gate closes 15 minutes before departure.",
]
TRAVEL_Q = {
    "cabin_bag": (
        "Does the Light fare include a cabin bag?",
        "Is a cabin bag included with a Light fare?",
    ),
    "change_fee": (
        "How much does it cost to change my flight?",
        "What is the fee for changing the date of my flight?",
    ),
    "checkin": (
        "When does online check-in open?",
        "How early can I check in online?",
    ),
    "pets": ("Can I bring my dog in the cabin?", "Am I allowed to take my dog into the cabin?"),
    "cancelled": (
        "What happens if my flight is cancelled?",
        "What are my options when my flight gets cancelled?",
    ),
}

# ---- coding: documentation of a small data-frame library ---------------------------------------
CODING = [
    "tidyq.read_table(path, sep=None, header=True, types=None) reads a delimited text file into "
    "a Table. When sep is None, the separator is detected from the first 20 lines, trying comma, "
    "tab, semicolon and pipe in that order. With header=False, columns are named c0, c1 and so "
    "on. The types argument maps column names to tidyq types and skips detection for those "
    "columns; detection otherwise reads the first 1,000 rows.",
    "Table.filter(expr) returns a new Table with the rows where expr is true. Expressions are "
    "built from column references such as col('price') and combine with &, | and ~. Rows where "
    "the expression is null are dropped, not kept. filter never changes the Table it is called "
    "on; to keep the result, assign it to a variable.",
    "Table.group_by(*keys).agg(**aggregations) groups rows by one or more key columns and "
    "computes one row per group. Each aggregation is written as name=func(column), for example "
    "total=sum('amount'). The result is sorted by the keys in ascending order unless "
    "sort=False is passed to group_by, which keeps the order in which groups first appear and "
    "is faster on large tables.",
    "Table.join(other, on, how='inner') joins two tables on one or more columns. how accepts "
    "inner, left, right, outer, semi and anti. Key columns must have the same type on both "
    "sides; joining an int32 column with an int64 column raises a TypeMismatch error instead of "
    "converting silently. Columns that exist in both tables and are not keys get the suffix "
    "_right on the right-hand side.",
    "Table.write_parquet(path, compression='zstd', row_group_size=100_000) writes the table to a "
    "Parquet file. compression accepts zstd, snappy, gzip or None. write_parquet overwrites an "
    "existing file without asking; pass exist_ok=False to raise FileExistsError instead. "
    "Writing to a path that ends with a slash writes a partitioned dataset, one file per value "
    "of the columns given in partition_by.",
    "Missing values are represented by null in every column type, including floats: tidyq never "
    "uses NaN for missing data. Table.fill_null(value) replaces nulls with a constant, and "
    "Table.drop_null(*columns) removes rows that are null in any of the given columns, or in "
    "any column when none are given. Aggregations such as sum and mean skip nulls.",
]
CODING_OTHER = [
    "frameworks.load_csv(path, delimiter=',', has_header=True) loads a CSV file. The delimiter "
    "is never detected automatically; pass delimiter='\\t' for tab-separated files. Column types "
    "are inferred from the whole file, which can be slow for files over a gigabyte.",
    "Frame.where(condition) keeps the rows matching the condition and modifies the frame in "
    "place, returning None. Rows where the condition is missing are kept. Use Frame.copy() "
    "first if the original rows are still needed.",
    "Frame.save(path, format='parquet') writes the frame to disk. It refuses to overwrite an "
    "existing file and raises FileExistsError unless overwrite=True is passed. Compression is "
    "always snappy.",
]
CODING_Q = {
    "sep": (
        "Does read_table detect the separator automatically?",
        "Is the separator detected automatically when reading a table?",
    ),
    "filter_inplace": (
        "Does filter modify the table in place?",
        "Does calling filter change the original table?",
    ),
    "null_rows": (
        "What happens to rows where the filter expression is null?",
        "Are rows with a null filter result kept or dropped?",
    ),
    "overwrite": (
        "Does write_parquet overwrite an existing file?",
        "Will write_parquet replace a file that already exists?",
    ),
    "join_types": (
        "What happens when I join an int32 column with an int64 column?",
        "What does join do if the key columns are int32 on one side and int64 on the other?",
    ),
}

# the question with one answer-determining detail changed (same context): a different answer
DETAIL_Q = {
    "support": (
        "Can I use text messages for two-factor authentication?",
        "Can I use hardware security keys for two-factor authentication?",
    ),
    "billing": ("Can I pay with PayPal?", "Can I pay with American Express?"),
    "retail": ("How long is the guarantee on a sofa?", "How long is the guarantee on a lamp?"),
    "travel": (
        "Does the Light fare include a cabin bag?",
        "Does the Flex fare include a cabin bag?",
    ),
    "coding": (
        "Does read_table detect the separator automatically?",
        "Does read_table detect the column types automatically?",
    ),
}

DOMAINS = {
    "support": (SUPPORT, SUPPORT_OTHER, SUPPORT_Q),
    "billing": (BILLING, BILLING_OTHER, BILLING_Q),
    "retail": (RETAIL, RETAIL_OTHER, RETAIL_Q),
    "travel": (TRAVEL, TRAVEL_OTHER, TRAVEL_Q),
    "coding": (CODING, CODING_OTHER, CODING_Q),
}


def _contexts(name: str) -> dict[str, list[str]]:
    """Three retrieved contexts per domain: short, whole domain, and padded with other domains."""
    own, other, _ = DOMAINS[name]
    neighbours = [d for d in DOMAINS if d != name]
    padding = [DOMAINS[d][0][i] for i in (0, 2, 4, 5) for d in neighbours]
    return {
        "short": own[:5],  # about 300-500 tokens
        "full": own,  # about 500 tokens
        "padded": own + padding,  # about 2,000 tokens: a retriever returning neighbours too
        "other": other + own[4:],  # another vendor's pages on the same subjects
        "other_padded": other + own[3:] + padding,
    }


def pairs() -> list[dict[str, object]]:
    """Every labelled pair, 15 per domain."""
    out: list[dict[str, object]] = []
    for name, (_, _, questions) in DOMAINS.items():
        keys = list(questions)
        sizes = ["short", "full", "padded", "full", "padded"]

        def add(
            kind: str, ca: str, qa: str, cb: str, qb: str, same: bool, name: str = name
        ) -> None:
            ctx = _contexts(name)
            out.append(
                {
                    "id": f"{name}-{len(out):03d}",
                    "domain": name,
                    "kind": kind,
                    "a": {"context": ctx[ca], "question": qa},
                    "b": {"context": ctx[cb], "question": qb},
                    "same_answer": same,
                }
            )

        for key, size in zip(keys, sizes, strict=True):  # the question reworded
            q, para = questions[key]
            add("same_q_same_ctx", size, q, size, para, True)
        for i, size in enumerate(sizes):  # another question over the same context
            add(
                "diff_q_same_ctx",
                size,
                questions[keys[i]][0],
                size,
                questions[keys[i - 1]][0],
                False,
            )
        for key, (ca, cb) in zip(
            keys[:3],
            [("full", "other"), ("padded", "other_padded"), ("short", "other")],
            strict=True,
        ):  # the same question over another vendor's documents
            q = questions[key][0]
            add("same_q_diff_ctx", ca, q, cb, q, False)
        q, detail = DETAIL_Q[name]
        for size in ("short", "padded"):
            add("detail_q_same_ctx", size, q, size, detail, False)
    return out


def main() -> None:
    target = Path(__file__).with_name("rag_pairs.jsonl")
    with target.open("w", encoding="utf-8") as fh:
        for pair in pairs():
            fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
