//! The report's gallery: each picked test image beside its anomaly map and mask.

use std::fmt::Write;

use super::content::*;
use super::format::*;
use crate::html::escape_html;

/// The picture sections: each item's image, anomaly map and mask side by side.
pub(super) fn gallery(page: &mut String, sections: &[GallerySection]) {
    page.push_str("<section><h2>Gallery</h2>");
    if sections.is_empty() {
        page.push_str("<p>No pictures were selected for this report.</p>");
    }
    for section in sections {
        let _ = write!(
            page,
            "<h3>{}</h3><p class=\"sub\">{}</p>",
            escape_html(&section.title),
            escape_html(&section.explanation)
        );
        if section.items.is_empty() {
            page.push_str("<p class=\"muted\">No image in this group.</p>");
            continue;
        }
        page.push_str("<div class=\"gallery\">");
        for item in &section.items {
            let shots: Vec<(&str, &[u8])> = [
                Some(("image", item.image_png.as_slice())),
                item.overlay_png.as_deref().map(|p| ("anomaly map", p)),
                item.mask_png.as_deref().map(|p| ("ground truth", p)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let caption = escape_html(&item.caption);
            // The figure's width is set from its pictures, so that a long caption wraps under
            // them instead of widening the figure.
            let _ = write!(
                page,
                "<figure class=\"item w{}\"><div class=\"shots\">",
                shots.len()
            );
            for (label, png) in shots {
                let _ = write!(
                    page,
                    "<div class=\"shot\"><img src=\"{}\" alt=\"{}: {label}\">{label}</div>",
                    png_uri(png),
                    caption
                );
            }
            let _ = write!(page, "</div><figcaption>{caption}</figcaption></figure>");
        }
        page.push_str("</div>");
    }
    page.push_str("</section>\n");
}
