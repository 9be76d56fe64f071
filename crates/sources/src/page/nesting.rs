//! A linear pre-scan that keeps hostile pages from costing quadratic time.
//!
//! html5ever's tree builder scans the stack of open elements for many start and end tags
//! (e.g. "is there a `<p>` in button scope?" before every `<div>`), so building a page
//! costs about the sum of the nesting depth at each tag: 40,000 nested `<div>`s (200 KB)
//! take seconds, and a 10 MiB page of them would take hours. Browsers cap the depth;
//! html5ever does not. So the page is tokenized first (linear), the same sum is estimated,
//! and pages over a generous budget are refused with a clear error instead of parsed.

use std::cell::Cell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

/// Estimated stack-scan steps allowed per page. Large real pages (tens of thousands of
/// elements, a few dozen deep) stay around a million; this is about a quarter of a second
/// of tree building at worst.
pub(crate) const MAX_NESTING_WORK: u64 = 32_000_000;

/// Whether building a tree for `html` would exceed [`MAX_NESTING_WORK`].
pub(crate) fn too_complex(html: &str) -> bool {
    let tokenizer = Tokenizer::new(Scan::default(), TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // The sink never asks to pause for a script, so one call consumes all the input.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.work.get() > MAX_NESTING_WORK
}

#[derive(Default)]
struct Scan {
    /// Approximate depth of the tree builder's stack of open elements.
    depth: Cell<u64>,
    /// Inside `<svg>` or `<math>`, where `<x/>` really closes.
    foreign: Cell<u64>,
    work: Cell<u64>,
}

impl TokenSink for Scan {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let Token::TagToken(tag) = token else {
            return TokenSinkResult::Continue;
        };
        let name: &str = &tag.name;
        let depth = self.depth.get();
        self.work.set(self.work.get().saturating_add(depth));
        // Elements the builder closes by itself (void ones, and those closed by a sibling)
        // do not deepen the stack; everything else is assumed to stay open until its end
        // tag, as html5ever does with `<div>` and, outside foreign content, `<div/>`.
        let nests = !is_void(name) && !closes_implicitly(name);
        match tag.kind {
            TagKind::StartTag => {
                let is_foreign_root = matches!(name, "svg" | "math");
                let self_closed = tag.self_closing && (self.foreign.get() > 0 || is_foreign_root);
                if nests && !self_closed {
                    self.depth.set(depth + 1);
                    if is_foreign_root {
                        self.foreign.set(self.foreign.get() + 1);
                    }
                }
                if self.foreign.get() > 0 {
                    return TokenSinkResult::Continue;
                }
                match name {
                    "script" => TokenSinkResult::RawData(RawKind::ScriptData),
                    "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" => {
                        TokenSinkResult::RawData(RawKind::Rawtext)
                    }
                    "title" | "textarea" => TokenSinkResult::RawData(RawKind::Rcdata),
                    "plaintext" => TokenSinkResult::Plaintext,
                    _ => TokenSinkResult::Continue,
                }
            }
            TagKind::EndTag => {
                if nests {
                    self.depth.set(depth.saturating_sub(1));
                    if matches!(name, "svg" | "math") {
                        self.foreign.set(self.foreign.get().saturating_sub(1));
                    }
                }
                TokenSinkResult::Continue
            }
        }
    }
}

fn is_void(name: &str) -> bool {
    matches!(
        name,
        "area"
            | "base"
            | "basefont"
            | "bgsound"
            | "br"
            | "col"
            | "embed"
            | "frame"
            | "hr"
            | "image"
            | "img"
            | "input"
            | "keygen"
            | "link"
            | "meta"
            | "param"
            | "source"
            | "track"
            | "wbr"
    )
}

/// Elements whose start tag closes an open one of their kind, so a list of unclosed
/// `<li>`s or `<p>`s stays flat.
fn closes_implicitly(name: &str) -> bool {
    matches!(
        name,
        "p" | "li"
            | "dt"
            | "dd"
            | "option"
            | "optgroup"
            | "tr"
            | "td"
            | "th"
            | "thead"
            | "tbody"
            | "tfoot"
            | "rb"
            | "rt"
            | "rp"
            | "rtc"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_too_complex() {
        let deep = format!("{}x", "<div>".repeat(20_000));
        assert!(too_complex(&deep));
        // `<div/>` is not self-closing in HTML: it nests just the same.
        let fake_closed = "<div/>".repeat(20_000);
        assert!(too_complex(&fake_closed));
        // Deep enough to be slow, reached after a flat prefix.
        let wide_then_deep = format!(
            "{}{}",
            "<span>a</span>".repeat(50_000),
            "<section>".repeat(10_000)
        );
        assert!(too_complex(&wide_then_deep));
    }

    #[test]
    fn real_page_shapes_are_fine() {
        // Many siblings, moderate depth: a big listing page.
        let mut page = String::from("<html><body><main><ul>");
        for i in 0..20_000 {
            page.push_str(&format!(
                "<li><div class=card><a href=/x/{i}><h3>t</h3></a><p>d<br><img src=a.png></div>"
            ));
        }
        page.push_str("</ul></main></body></html>");
        assert!(!too_complex(&page));
        // Unclosed paragraphs and list items do not nest.
        assert!(!too_complex(&"<p>para".repeat(50_000)));
        assert!(!too_complex(&"<li>item".repeat(50_000)));
        // Self-closing SVG children do not nest either.
        let svg = format!("<svg>{}</svg>", "<path d='M0 0'/>".repeat(50_000));
        assert!(!too_complex(&svg));
        // Tags inside scripts, styles and comments are text.
        let script = format!("<script>var s = '{}';</script>", "<div>".repeat(50_000));
        assert!(!too_complex(&script));
        let comment = format!("<!-- {} -->", "<div>".repeat(50_000));
        assert!(!too_complex(&comment));
    }
}
