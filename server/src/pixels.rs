//! The bodies of browser-facing answers: the 1×1 gif, and the `iframe` and `js` forms of a
//! conversion answer carrying the affiliate's browser pixels (SPEC 2.3, 5.2).

use engine::BrowserPixel;
use hyper::header::HeaderValue;

/// A transparent 1×1 GIF89a: the answer to impressions and `img` pixels whatever happened,
/// so a publisher's or merchant's page never shows a broken image.
pub const GIF: [u8; 43] = [
    b'G', b'I', b'F', b'8', b'9', b'a', // header
    0x01, 0x00, 0x01, 0x00, // 1×1
    0x80, 0x00, 0x00, // global colour table of 2 entries
    0x00, 0x00, 0x00, 0xff, 0xff, 0xff, // black, white
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, // graphic control: colour 0 transparent
    0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, // image descriptor
    0x02, 0x02, 0x44, 0x01, 0x00, // LZW-coded single pixel
    0x3b, // trailer
];

pub const GIF_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("image/gif");
pub const HTML_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
pub const JS_CONTENT_TYPE: HeaderValue =
    HeaderValue::from_static("application/javascript; charset=utf-8");

/// An HTML page holding the pixels, for `type=iframe`. URLs are HTML-escaped into
/// attributes; inline HTML pixels come from the operator's template with their macro
/// values already escaped by the engine.
pub fn iframe_page(pixels: &[BrowserPixel]) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title></title></head><body>",
    );
    for pixel in pixels {
        match pixel {
            BrowserPixel::Image { url } => page.push_str(&format!(
                "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
                html_escape(url)
            )),
            BrowserPixel::Iframe { url } => page.push_str(&format!(
                "<iframe src=\"{}\" width=\"1\" height=\"1\" frameborder=\"0\" style=\"display:none\"></iframe>",
                html_escape(url)
            )),
            BrowserPixel::Script { url } => page.push_str(&format!(
                "<script src=\"{}\"></script>",
                html_escape(url)
            )),
            BrowserPixel::Html { html } => page.push_str(html),
        }
    }
    page.push_str("</body></html>");
    page
}

/// A script that appends the pixels through DOM APIs, for `type=js`. It never uses
/// `document.write` (blocked in many contexts, and unsafe after load). Scripts inside
/// inline HTML are re-created so the browser runs them.
pub fn script(pixels: &[BrowserPixel]) -> String {
    let mut js = String::from(
        "(function(){var d=document,b=d.body||d.documentElement;\
function add(t,u){var e=d.createElement(t);e.src=u;if(t!=='script'){e.width=1;e.height=1;e.style.display='none';}else{e.async=true;}b.appendChild(e);}\
function html(h){var w=d.createElement('div');w.style.display='none';w.innerHTML=h;\
var s=w.getElementsByTagName('script');for(var i=s.length-1;i>=0;i--){var o=s[i],n=d.createElement('script');\
if(o.src){n.src=o.src;}else{n.text=o.text;}o.parentNode.replaceChild(n,o);}b.appendChild(w);}\n",
    );
    for pixel in pixels {
        let call = match pixel {
            BrowserPixel::Image { url } => format!("add('img',{});\n", js_string(url)),
            BrowserPixel::Iframe { url } => format!("add('iframe',{});\n", js_string(url)),
            BrowserPixel::Script { url } => format!("add('script',{});\n", js_string(url)),
            BrowserPixel::Html { html } => format!("html({});\n", js_string(html)),
        };
        js.push_str(&call);
    }
    js.push_str("})();\n");
    js
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JavaScript string literal that is also safe inside an HTML `<script>` element: JSON
/// escaping plus `<`, `>`, `&` and the two line separators JavaScript treats as newlines.
pub fn js_string(text: &str) -> String {
    let json = serde_json::Value::String(text.to_string()).to_string();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gif_is_a_43_byte_gif89a() {
        assert_eq!(GIF.len(), 43);
        assert_eq!(&GIF[..6], b"GIF89a");
        assert_eq!(GIF[42], 0x3b);
    }

    #[test]
    fn iframe_page_escapes_urls_and_keeps_inline_html() {
        let page = iframe_page(&[
            BrowserPixel::Image {
                url: "https://a.example/p?x=1&y=\"2\"".into(),
            },
            BrowserPixel::Html {
                html: "<b>ok</b>".into(),
            },
        ]);
        assert!(page.contains("src=\"https://a.example/p?x=1&amp;y=&quot;2&quot;\""));
        assert!(page.contains("<b>ok</b>"));
    }

    #[test]
    fn script_appends_without_document_write_and_cannot_be_broken_out_of() {
        let js = script(&[
            BrowserPixel::Image {
                url: "https://a.example/p?q='</script><script>alert(1)//".into(),
            },
            BrowserPixel::Html {
                html: "<img src=x>\u{2028}".into(),
            },
        ]);
        assert!(!js.contains("document.write"));
        assert!(!js.contains("</script>"));
        assert!(!js.contains('\u{2028}'));
        assert!(js.contains("add('img',\"https://a.example/p?q='\\u003c/script\\u003e"));
        assert!(js.contains("html(\"\\u003cimg src=x\\u003e\\u2028\")"));
    }
}
