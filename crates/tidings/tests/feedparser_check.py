"""Parses a feed document from stdin with Python's feedparser (a real feed reader's parser)
and prints what it made of it as JSON, for crates/tidings/tests/private_feed.rs.

Needs feedparser: pip install feedparser
"""
import json
import sys

try:
    import feedparser
except ImportError:
    sys.stderr.write(
        "Python feedparser is missing: the private feed test needs it. "
        "Install it with: pip install feedparser\n"
    )
    sys.exit(3)

data = sys.stdin.buffer.read()
d = feedparser.parse(
    data, response_headers={"content-type": "application/atom+xml; charset=utf-8"}
)


def links(x):
    return [
        {"rel": l.get("rel"), "href": l.get("href"), "type": l.get("type")}
        for l in x.get("links", [])
    ]


print(
    json.dumps(
        {
            "bozo": int(d.bozo),
            "bozo_exception": str(d.get("bozo_exception", "")),
            "version": d.version,
            "encoding": d.get("encoding"),
            "feed": {
                "id": d.feed.get("id"),
                "title": d.feed.get("title"),
                "updated": d.feed.get("updated"),
                "author": d.feed.get("author"),
                "links": links(d.feed),
            },
            "entries": [
                {
                    "id": e.get("id"),
                    "title": e.get("title"),
                    "title_type": e.get("title_detail", {}).get("type"),
                    "link": e.get("link"),
                    "links": links(e),
                    "tags": [t.get("term") for t in e.get("tags", [])],
                    "content": [
                        {"type": c.get("type"), "value": c.get("value")}
                        for c in e.get("content", [])
                    ],
                    "published": e.get("published"),
                    "updated": e.get("updated"),
                    "author": e.get("author"),
                }
                for e in d.entries
            ],
        }
    )
)
