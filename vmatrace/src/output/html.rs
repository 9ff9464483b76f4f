//! `report --html`: one self-contained page for an incident write-up: the
//! report's text (verdict, top sites, lost events, processes), the count
//! plot and the flame graph. Nothing is fetched: the drawings are inside.

use base64::Engine;

use crate::outfile::PLOT_MARK;

/// What goes on the page.
pub struct Parts<'a> {
    pub title: &'a str,
    /// The text report, as `vmatrace report` prints it.
    pub text: &'a str,
    pub plot_svg: Option<&'a str>,
    pub flame_svg: Option<&'a str>,
    /// What the flame graph's widths stand for, and on which stacks.
    pub flame_caption: Option<String>,
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1250px}\
pre{font-family:monospace;font-size:13px;background:#f6f6f6;padding:1em;overflow-x:auto}\
figure{margin:1.5em 0}figcaption{color:#555;font-size:14px}\
object,svg{max-width:100%;height:auto}";

/// The page. The plot is inline; the flame graph is its own document (an
/// `object` of a data URL), so its script finds its own elements and its
/// zoom and search work.
pub fn page(parts: &Parts) -> String {
    let mut page = format!(
        "<!DOCTYPE html>\n{PLOT_MARK}\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(parts.title),
        escape(parts.title)
    );
    let (verdict, rest) = split_report(parts.text);
    page.push_str(&format!(
        "<h2>Verdict</h2>\n<pre>{}</pre>\n",
        escape(verdict)
    ));
    if let Some(svg) = parts.plot_svg {
        page.push_str("<h2>VMA count</h2>\n<figure>");
        page.push_str(without_prolog(svg));
        page.push_str("</figure>\n");
    }
    if let Some(svg) = parts.flame_svg {
        let data = base64::engine::general_purpose::STANDARD.encode(svg);
        page.push_str(&format!(
            "<h2>Flame graph</h2>\n<figure><object type=\"image/svg+xml\" \
             data=\"data:image/svg+xml;base64,{data}\" width=\"1200\"></object>\
             <figcaption>{}</figcaption></figure>\n",
            escape(parts.flame_caption.as_deref().unwrap_or(""))
        ));
    }
    page.push_str(&format!(
        "<h2>Call sites, lost events and processes</h2>\n<pre>{}</pre>\n",
        escape(rest)
    ));
    page.push_str("</body></html>\n");
    page
}

/// The report's head and verdicts, then the rest (sites, lost events,
/// processes): the verdict opens the page.
fn split_report(text: &str) -> (&str, &str) {
    let cut = ["\n  top call sites", "\n  lost events", "\npid "]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .unwrap_or(text.len());
    (&text[..cut], text[cut..].trim_start_matches('\n'))
}

/// An SVG document as an element of the page: no XML declaration or
/// doctype.
fn without_prolog(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |at| &svg[at..])
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_holds_its_parts_escaped() {
        let page = page(&Parts {
            title: "vmatrace report: a<b>.vmat",
            text: "trace x\nverdict: pid 1 (x) hit the VMA limit\n\npid 1 (x)\n  vmas: <3>\n",
            plot_svg: Some("<?xml version=\"1.0\"?><svg id=\"plot\"></svg>"),
            flame_svg: Some("<svg id=\"flame\"></svg>"),
            flame_caption: Some("4 SPLITs by stack".into()),
        });
        assert!(page.starts_with("<!DOCTYPE html>\n<!-- vmatrace plot -->"));
        assert!(page.contains("<h1>vmatrace report: a&lt;b&gt;.vmat</h1>"));
        assert!(page.contains(
            "<h2>Verdict</h2>\n<pre>trace x\nverdict: pid 1 (x) hit the VMA limit\n</pre>"
        ));
        assert!(page.contains("<figure><svg id=\"plot\"></svg></figure>"));
        let data = base64::engine::general_purpose::STANDARD.encode("<svg id=\"flame\"></svg>");
        assert!(page.contains(&format!("data:image/svg+xml;base64,{data}")));
        assert!(page.contains("<pre>pid 1 (x)\n  vmas: &lt;3&gt;\n</pre>"));
    }
}
