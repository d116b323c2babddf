//! `pull`'s progress: the state of one pull as hearthd's admin service
//! streams it (`PullProgress`), drawn as one line per layer and a summary.
//! Pure text: the caller decides where and how often to draw it.

use std::time::Duration;

use hearthd::admin::proto::pull_progress_event::Event;
use hearthd::admin::proto::PullProgressEvent;

use crate::output::short_id;

/// Characters in a layer's bar.
const BAR_WIDTH: usize = 20;
/// Characters of a layer digest shown.
const DIGEST_CHARS: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Layer {
    digest: String,
    done: u64,
    total: u64,
    /// Set once the layer is in the store: whether this pull downloaded it.
    finished: Option<bool>,
}

/// What is known of one pull.
#[derive(Debug, Default)]
pub struct PullView {
    id: String,
    layers: Vec<Layer>,
    building: bool,
    done: bool,
    failed: Option<String>,
}

/// `12.3MB`: decimal megabytes with one decimal, so bars line up.
fn mb(bytes: u64) -> String {
    format!("{:.1}MB", bytes as f64 / 1e6)
}

/// `[#####...............]` for `done` of `total`.
fn bar(done: u64, total: u64) -> String {
    let filled = if total == 0 {
        BAR_WIDTH
    } else {
        let f = (done.min(total) as u128 * BAR_WIDTH as u128 / total as u128) as usize;
        f.min(BAR_WIDTH)
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR_WIDTH - filled))
}

impl PullView {
    /// Takes one event of the stream.
    pub fn apply(&mut self, event: PullProgressEvent) {
        let Some(event) = event.event else { return };
        match event {
            Event::Resolved(r) => {
                self.id = r.image_id;
                for l in r.layers {
                    if self.layer(&l.digest).is_none() {
                        self.layers.push(Layer {
                            digest: l.digest,
                            done: 0,
                            total: l.size,
                            finished: None,
                        });
                    }
                }
            }
            Event::Layer(p) => {
                let l = self.layer_or_insert(&p.digest);
                l.done = l.done.max(p.done_bytes);
                l.total = p.total_bytes;
            }
            Event::LayerDone(d) => {
                let l = self.layer_or_insert(&d.digest);
                l.done = l.total;
                l.finished = Some(l.finished.unwrap_or(false) || d.downloaded);
            }
            Event::Building(_) => self.building = true,
            Event::Done(d) => {
                self.id = d.image_id;
                self.done = true;
            }
            Event::Failed(f) => self.failed = Some(f.message),
        }
    }

    fn layer(&self, digest: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.digest == digest)
    }

    fn layer_or_insert(&mut self, digest: &str) -> &mut Layer {
        let i = match self.layers.iter().position(|l| l.digest == digest) {
            Some(i) => i,
            None => {
                self.layers.push(Layer {
                    digest: digest.to_string(),
                    done: 0,
                    total: 0,
                    finished: None,
                });
                self.layers.len() - 1
            }
        };
        &mut self.layers[i]
    }

    /// True once the stream said Done or Failed.
    pub fn ended(&self) -> bool {
        self.done || self.failed.is_some()
    }

    /// True once the layers are known.
    pub fn resolved(&self) -> bool {
        !self.id.is_empty()
    }

    /// The lines to draw: one per layer, then what happens after them.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .layers
            .iter()
            .map(|l| {
                let mut line = format!(
                    "{:<width$}  {}  {}/{}",
                    short_id(&l.digest, true)
                        .chars()
                        .take(DIGEST_CHARS)
                        .collect::<String>(),
                    bar(l.done, l.total),
                    mb(l.done),
                    mb(l.total),
                    width = DIGEST_CHARS,
                );
                if l.finished == Some(false) {
                    line.push_str("  already present");
                }
                line
            })
            .collect();
        if let Some(message) = &self.failed {
            out.push(format!("failed: {message}"));
        } else if self.building && !self.done {
            out.push("building the erofs image ...".to_string());
        }
        out
    }

    /// `Pulled <ref> (<id 13>): N layers, X MB in T s`; without progress
    /// events (an older hearthd) the layers part is left out.
    pub fn summary(&self, reference: &str, id: &str, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        if !self.resolved() {
            return format!(
                "Pulled {reference} ({}) in {secs:.1} s",
                short_id(id, false)
            );
        }
        let bytes: u64 = self.layers.iter().map(|l| l.total).sum();
        let n = self.layers.len();
        format!(
            "Pulled {reference} ({}): {n} layer{}, {:.1} MB in {secs:.1} s",
            short_id(id, false),
            if n == 1 { "" } else { "s" },
            bytes as f64 / 1e6,
        )
    }
}

/// Redraws lines in place on a terminal: moves the cursor back up over what
/// was drawn last time and rewrites every line.
#[derive(Debug, Default)]
pub struct InPlace {
    drawn: usize,
    last: Vec<String>,
}

impl InPlace {
    /// The bytes that replace the previous drawing with `lines` (nothing
    /// when they are what is on the screen).
    pub fn frame(&mut self, lines: &[String]) -> String {
        if self.drawn > 0 && self.last == lines {
            return String::new();
        }
        self.last = lines.to_vec();
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for l in lines {
            out.push_str("\r\x1b[2K");
            out.push_str(l);
            out.push('\n');
        }
        // Fewer lines than last time (a "building" line gone): clear the rest.
        for _ in lines.len()..self.drawn {
            out.push_str("\r\x1b[2K\n");
        }
        if self.drawn > lines.len() {
            out.push_str(&format!("\x1b[{}A", self.drawn - lines.len()));
        }
        self.drawn = lines.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use hearthd::admin::proto;

    use super::*;

    fn ev(e: Event) -> PullProgressEvent {
        PullProgressEvent { event: Some(e) }
    }

    const A: &str = "sha256:aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
    const B: &str = "sha256:bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222";
    const ID: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn resolved() -> PullView {
        let mut v = PullView::default();
        v.apply(ev(Event::Resolved(proto::Resolved {
            image_id: ID.into(),
            layers: vec![
                proto::Layer {
                    digest: A.into(),
                    size: 40_100_000,
                },
                proto::Layer {
                    digest: B.into(),
                    size: 2_000_000,
                },
            ],
        })));
        v
    }

    #[test]
    fn one_line_per_layer_with_bar_and_sizes() {
        let mut v = resolved();
        v.apply(ev(Event::Layer(proto::LayerProgress {
            digest: A.into(),
            done_bytes: 12_300_000,
            total_bytes: 40_100_000,
        })));
        v.apply(ev(Event::LayerDone(proto::LayerDone {
            digest: B.into(),
            downloaded: false,
        })));
        assert_eq!(
            v.lines(),
            vec![
                "aaaaaaaaaaaa  [######..............]  12.3MB/40.1MB".to_string(),
                "bbbbbbbbbbbb  [####################]  2.0MB/2.0MB  already present".to_string(),
            ]
        );
        assert!(!v.ended());
        v.apply(ev(Event::Building(proto::Building {})));
        assert_eq!(v.lines()[2], "building the erofs image ...");
        v.apply(ev(Event::Done(proto::Done {
            image_id: ID.into(),
        })));
        assert!(v.ended());
        assert_eq!(v.lines().len(), 2, "no building line once done");
    }

    #[test]
    fn summary_names_the_image_layers_bytes_and_time() {
        let v = resolved();
        assert_eq!(
            v.summary(
                "127.0.0.1:5000/demo/busybox:v1",
                ID,
                Duration::from_millis(1400)
            ),
            "Pulled 127.0.0.1:5000/demo/busybox:v1 (0123456789abc): 2 layers, 42.1 MB in 1.4 s"
        );
        // Without progress (hearthd without the admin service).
        assert_eq!(
            PullView::default().summary("busybox", ID, Duration::from_secs(2)),
            "Pulled busybox (0123456789abc) in 2.0 s"
        );
        let mut one = PullView::default();
        one.apply(ev(Event::Layer(proto::LayerProgress {
            digest: A.into(),
            done_bytes: 1,
            total_bytes: 500_000,
        })));
        one.apply(ev(Event::Done(proto::Done {
            image_id: ID.into(),
        })));
        assert_eq!(
            one.summary("x", ID, Duration::ZERO),
            "Pulled x (0123456789abc): 1 layer, 0.5 MB in 0.0 s"
        );
    }

    #[test]
    fn failures_show_under_the_layers() {
        let mut v = resolved();
        v.apply(ev(Event::Failed(proto::Failed {
            code: 14,
            message: "registry down".into(),
        })));
        assert!(v.ended());
        assert_eq!(v.lines().last().unwrap(), "failed: registry down");
    }

    #[test]
    fn frames_redraw_in_place() {
        let mut p = InPlace::default();
        let two = vec!["a".to_string(), "b".to_string()];
        assert_eq!(p.frame(&two), "\r\x1b[2Ka\n\r\x1b[2Kb\n");
        assert_eq!(p.frame(&two), "", "unchanged: nothing drawn");
        let two = vec!["a".to_string(), "c".to_string()];
        assert_eq!(p.frame(&two), "\x1b[2A\r\x1b[2Ka\n\r\x1b[2Kc\n");
        assert_eq!(p.frame(&two[..1]), "\x1b[2A\r\x1b[2Ka\n\r\x1b[2K\n\x1b[1A");
        assert_eq!(bar(0, 0), format!("[{}]", "#".repeat(BAR_WIDTH)));
        assert_eq!(
            bar(5, 10),
            format!("[{}{}]", "#".repeat(10), ".".repeat(10))
        );
    }
}
