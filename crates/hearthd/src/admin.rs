//! Hearth's own admin service (`hearth.admin.v1.Admin`, `proto/admin.proto`),
//! served beside the CRI on the same socket: what the CRI has no room for.
//!
//! - `PullProgress`: the CRI PullImage is one unary call, so the CRI image
//!   service hands each pull a [`PullHandle`] from [`PullEvents`], whose
//!   progress sink fans the store's [`PullProgress`] events out over a tokio
//!   broadcast channel per normalised reference. The latest state of each
//!   pull (resolved layers, per-layer bytes, building, the outcome) is kept
//!   so a subscriber that connects late first gets that state, then the live
//!   events; a finished pull is kept for [`RETAIN`] for subscribers that
//!   arrive after it ended.
//! - `PruneImages`: `ImageStore::prune`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth_image::{ImageReference, ImageStore, ProgressSink, PullProgress};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::cri::status::image_to_status;
use crate::cri::Cri;

/// Generated messages, client and server.
#[allow(missing_docs)]
pub mod proto {
    tonic::include_proto!("hearth.admin.v1");
}

use proto::admin_server::{Admin as AdminService, AdminServer};
use proto::pull_progress_event::Event as Wire;

/// How long a finished pull's state stays for late subscribers.
pub const RETAIN: Duration = Duration::from_secs(30);
/// Events buffered per pull before a slow subscriber lags (and resyncs
/// from the kept state).
const CHANNEL_EVENTS: usize = 256;
/// Events buffered per subscriber stream.
const STREAM_EVENTS: usize = 64;

/// One event of a pull as subscribers see it.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Progress(PullProgress),
    Failed { code: Code, message: String },
}

#[derive(Debug, Clone, Default)]
struct LayerState {
    done: u64,
    total: u64,
    /// Set once the layer is in the store: whether this pull downloaded it.
    finished: Option<bool>,
}

/// The latest state of the pull(s) of one reference.
#[derive(Debug, Default)]
struct State {
    /// Pulls in flight.
    active: usize,
    /// When the last pull that joined started (Unix ms).
    last_started_ms: u64,
    /// When the last pull in flight ended.
    finished_at: Option<Instant>,
    resolved: Option<(String, Vec<(String, u64)>)>,
    layers: HashMap<String, LayerState>,
    building: bool,
    /// Done or Failed.
    end: Option<Event>,
}

impl State {
    /// The events that bring a new subscriber up to date, in order.
    fn replay(&self) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some((id, layers)) = &self.resolved {
            out.push(Event::Progress(PullProgress::Resolved {
                id: id.clone(),
                layers: layers.clone(),
            }));
            for (digest, size) in layers {
                let Some(l) = self.layers.get(digest) else {
                    continue;
                };
                if l.done > 0 {
                    out.push(Event::Progress(PullProgress::Layer {
                        digest: digest.clone(),
                        done: l.done,
                        total: if l.total > 0 { l.total } else { *size },
                    }));
                }
                if let Some(downloaded) = l.finished {
                    out.push(Event::Progress(PullProgress::LayerDone {
                        digest: digest.clone(),
                        downloaded,
                    }));
                }
            }
        }
        if self.building {
            out.push(Event::Progress(PullProgress::Building));
        }
        out.extend(self.end.clone());
        out
    }

    fn apply(&mut self, p: &PullProgress) {
        match p {
            PullProgress::Resolved { id, layers } => {
                self.resolved = Some((id.clone(), layers.clone()));
            }
            PullProgress::Layer {
                digest,
                done,
                total,
            } => {
                let l = self.layers.entry(digest.clone()).or_default();
                l.done = l.done.max(*done);
                l.total = *total;
            }
            PullProgress::LayerDone { digest, downloaded } => {
                let l = self.layers.entry(digest.clone()).or_default();
                // Downloaded by any pull of this reference counts.
                l.finished = Some(l.finished.unwrap_or(false) || *downloaded);
            }
            PullProgress::Building => self.building = true,
            PullProgress::Done { .. } => self.end = Some(Event::Progress(p.clone())),
        }
    }
}

struct Entry {
    tx: broadcast::Sender<Event>,
    state: Mutex<State>,
}

impl Entry {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, p: PullProgress) {
        let mut st = self.state();
        if st.end.is_some() {
            // Another pull of the same reference already finished it.
            return;
        }
        st.apply(&p);
        // No receivers is fine.
        let _ = self.tx.send(Event::Progress(p));
    }
}

/// The pulls in flight (and recently finished) by normalised reference,
/// shared by the CRI image service (publisher) and the admin service.
#[derive(Default)]
pub struct PullEvents {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

/// One pull registered with [`PullEvents`]: its progress sink publishes; its
/// outcome is published by [`PullHandle::finish`] (a handle dropped without
/// it counts as a failed pull).
pub struct PullHandle {
    entry: Arc<Entry>,
    outcome: Option<Event>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The key pulls are registered under: the reference as the store parses it.
pub fn pull_key(reference: &str) -> Result<String, hearth_image::ImageError> {
    Ok(ImageReference::parse(reference)?.to_string())
}

impl PullEvents {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops entries nobody needs: no pull, no subscriber, and either never
    /// started or finished longer than [`RETAIN`] ago.
    fn sweep(entries: &mut HashMap<String, Arc<Entry>>) {
        entries.retain(|_, e| {
            let st = e.state();
            st.active > 0
                || e.tx.receiver_count() > 0
                || st.finished_at.is_some_and(|t| t.elapsed() < RETAIN)
        });
    }

    fn entry(&self, key: &str) -> Arc<Entry> {
        let mut entries = self.entries();
        Self::sweep(&mut entries);
        entries
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Entry {
                    tx: broadcast::channel(CHANNEL_EVENTS).0,
                    state: Mutex::new(State::default()),
                })
            })
            .clone()
    }

    /// Registers a pull of `key` (see [`pull_key`]). A pull that starts while
    /// another of the same reference is in flight joins its events.
    pub fn start(&self, key: &str) -> PullHandle {
        let entry = self.entry(key);
        {
            let mut st = entry.state();
            if st.active == 0 && st.end.is_some() {
                // A new pull after a finished one: start from scratch.
                *st = State::default();
            }
            st.active += 1;
            st.last_started_ms = now_ms();
        }
        PullHandle {
            entry,
            outcome: None,
        }
    }

    /// The events of the pull of `key` in flight (state so far first), or
    /// of a finished one that started at or after `since_ms` (0: any), or
    /// else of the next one. `None` ends the stream: the pull ended.
    fn subscribe(&self, key: &str, since_ms: u64) -> Subscription {
        let entry = self.entry(key);
        let st = entry.state();
        let rx = entry.tx.subscribe();
        let replay = if st.active > 0 || (st.end.is_some() && st.last_started_ms >= since_ms) {
            st.replay()
        } else {
            Vec::new()
        };
        drop(st);
        Subscription {
            entry,
            rx,
            pending: replay.into(),
        }
    }
}

impl PullHandle {
    /// The sink to pass to `ImageStore::pull`.
    pub fn sink(&self) -> ProgressSink {
        let entry = self.entry.clone();
        Arc::new(move |p| entry.publish(p))
    }

    /// Publishes the pull's outcome and ends it.
    pub fn finish(mut self, outcome: Result<&str, &Status>) {
        self.outcome = Some(match outcome {
            Ok(id) => Event::Progress(PullProgress::Done { id: id.to_string() }),
            Err(s) => Event::Failed {
                code: s.code(),
                message: s.message().to_string(),
            },
        });
    }
}

impl Drop for PullHandle {
    fn drop(&mut self) {
        let mut st = self.entry.state();
        st.active = st.active.saturating_sub(1);
        let outcome = self.outcome.take().unwrap_or(Event::Failed {
            code: Code::Internal,
            message: "the pull ended without a result".into(),
        });
        // Success ends the pull for everyone; a failure only once no other
        // pull of the same reference can still succeed.
        let ends = matches!(outcome, Event::Progress(_)) || st.active == 0;
        if st.end.is_none() && ends {
            st.end = Some(outcome.clone());
            let _ = self.entry.tx.send(outcome);
        }
        if st.active == 0 {
            st.finished_at = Some(Instant::now());
        }
    }
}

struct Subscription {
    entry: Arc<Entry>,
    rx: broadcast::Receiver<Event>,
    pending: std::collections::VecDeque<Event>,
}

impl Subscription {
    /// The next event; `None` after Done or Failed.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the live events: resync from the state.
                    let st = self.entry.state();
                    self.rx = self.entry.tx.subscribe();
                    self.pending = st.replay().into();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn is_end(e: &Event) -> bool {
    matches!(
        e,
        Event::Failed { .. } | Event::Progress(PullProgress::Done { .. })
    )
}

fn to_wire(e: Event) -> proto::PullProgressEvent {
    let event = match e {
        Event::Progress(PullProgress::Resolved { id, layers }) => Wire::Resolved(proto::Resolved {
            image_id: id,
            layers: layers
                .into_iter()
                .map(|(digest, size)| proto::Layer { digest, size })
                .collect(),
        }),
        Event::Progress(PullProgress::Layer {
            digest,
            done,
            total,
        }) => Wire::Layer(proto::LayerProgress {
            digest,
            done_bytes: done,
            total_bytes: total,
        }),
        Event::Progress(PullProgress::LayerDone { digest, downloaded }) => {
            Wire::LayerDone(proto::LayerDone { digest, downloaded })
        }
        Event::Progress(PullProgress::Building) => Wire::Building(proto::Building {}),
        Event::Progress(PullProgress::Done { id }) => Wire::Done(proto::Done { image_id: id }),
        Event::Failed { code, message } => Wire::Failed(proto::Failed {
            code: code as i32,
            message,
        }),
    };
    proto::PullProgressEvent { event: Some(event) }
}

/// The admin service over the image store and the CRI's pull events.
pub struct Admin {
    images: Arc<ImageStore>,
    pulls: Arc<PullEvents>,
}

/// The admin service for `serve`, sharing the CRI's image store and pulls.
pub fn server(cri: &Cri) -> AdminServer<Admin> {
    AdminServer::new(Admin {
        images: cri.images.clone(),
        pulls: cri.pulls.clone(),
    })
}

#[tonic::async_trait]
impl AdminService for Admin {
    type PullProgressStream = ReceiverStream<Result<proto::PullProgressEvent, Status>>;

    async fn pull_progress(
        &self,
        request: Request<proto::PullProgressRequest>,
    ) -> Result<Response<Self::PullProgressStream>, Status> {
        let r = request.into_inner();
        if r.reference.trim().is_empty() {
            return Err(Status::invalid_argument("reference is required"));
        }
        let key = pull_key(r.reference.trim()).map_err(image_to_status)?;
        let mut sub = self.pulls.subscribe(&key, r.since_unix_ms);
        let (tx, rx) = mpsc::channel(STREAM_EVENTS);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    // The client went away: stop waiting for a pull.
                    _ = tx.closed() => return,
                    next = sub.next() => next,
                };
                let Some(e) = next else { return };
                let end = is_end(&e);
                if tx.send(Ok(to_wire(e))).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn prune_images(
        &self,
        _: Request<proto::PruneImagesRequest>,
    ) -> Result<Response<proto::PruneImagesResponse>, Status> {
        let report = self.images.prune().await.map_err(image_to_status)?;
        tracing::info!(
            blobs = report.blobs_removed,
            erofs = report.erofs_removed,
            bytes = report.bytes_freed,
            "images pruned"
        );
        Ok(Response::new(proto::PruneImagesResponse {
            blobs_removed: report.blobs_removed as u64,
            erofs_removed: report.erofs_removed as u64,
            bytes_freed: report.bytes_freed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(digest: &str, done: u64, total: u64) -> PullProgress {
        PullProgress::Layer {
            digest: digest.into(),
            done,
            total,
        }
    }

    async fn drain(sub: &mut Subscription) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = sub.next().await {
            let end = is_end(&e);
            out.push(e);
            if end {
                break;
            }
        }
        out
    }

    #[tokio::test]
    async fn late_subscribers_get_the_latest_state_then_live_events() {
        let pulls = PullEvents::default();
        let pull = pulls.start("k");
        let sink = pull.sink();
        sink(PullProgress::Resolved {
            id: "sha256:i".into(),
            layers: vec![("a".into(), 10), ("b".into(), 20)],
        });
        sink(layer("a", 4, 10));
        sink(layer("a", 10, 10));
        sink(PullProgress::LayerDone {
            digest: "a".into(),
            downloaded: true,
        });
        sink(layer("b", 5, 20));
        let mut sub = pulls.subscribe("k", 0);
        sink(layer("b", 20, 20));
        sink(PullProgress::Building);
        sink(PullProgress::Done {
            id: "sha256:i".into(),
        });
        pull.finish(Ok("sha256:i"));
        let got = drain(&mut sub).await;
        let p = Event::Progress;
        assert_eq!(
            got,
            vec![
                p(PullProgress::Resolved {
                    id: "sha256:i".into(),
                    layers: vec![("a".into(), 10), ("b".into(), 20)],
                }),
                p(layer("a", 10, 10)),
                p(PullProgress::LayerDone {
                    digest: "a".into(),
                    downloaded: true
                }),
                p(layer("b", 5, 20)),
                p(layer("b", 20, 20)),
                p(PullProgress::Building),
                p(PullProgress::Done {
                    id: "sha256:i".into()
                }),
            ]
        );
        // After the end: a subscriber gets the final state at once, unless
        // it asks for pulls started after it.
        let mut late = pulls.subscribe("k", 0);
        let got = drain(&mut late).await;
        assert_eq!(got.len(), 6, "{got:?}");
        let later = pulls.subscribe("k", now_ms() + 1000);
        assert!(later.pending.is_empty());
    }

    #[tokio::test]
    async fn early_subscribers_wait_for_the_pull_and_failures_are_reported() {
        let pulls = PullEvents::default();
        let mut sub = pulls.subscribe("k", 0);
        let pull = pulls.start("k");
        pull.sink()(PullProgress::Building);
        pull.finish(Err(&Status::unavailable("registry down")));
        let got = drain(&mut sub).await;
        assert_eq!(
            got,
            vec![
                Event::Progress(PullProgress::Building),
                Event::Failed {
                    code: Code::Unavailable,
                    message: "registry down".into()
                }
            ]
        );
        // A handle dropped without an outcome still ends the pull.
        let mut sub = pulls.subscribe("other", 0);
        drop(pulls.start("other"));
        assert!(matches!(
            drain(&mut sub).await.as_slice(),
            [Event::Failed {
                code: Code::Internal,
                ..
            }]
        ));
    }

    #[tokio::test]
    async fn a_failed_pull_does_not_end_a_concurrent_one_and_a_new_pull_resets() {
        let pulls = PullEvents::default();
        let a = pulls.start("k");
        let b = pulls.start("k");
        let mut sub = pulls.subscribe("k", 0);
        a.finish(Err(&Status::cancelled("gone")));
        b.sink()(PullProgress::Done { id: "x".into() });
        b.finish(Ok("x"));
        assert_eq!(
            drain(&mut sub).await,
            vec![Event::Progress(PullProgress::Done { id: "x".into() })]
        );
        let c = pulls.start("k");
        let st = c.entry.state();
        assert!(st.end.is_none() && st.active == 1 && st.resolved.is_none());
    }

    #[test]
    fn finished_entries_without_subscribers_are_swept() {
        let pulls = PullEvents::default();
        pulls.start("k").finish(Ok("x"));
        pulls.entries()["k"].state().finished_at = Some(Instant::now() - RETAIN);
        // A subscriber's visit sweeps; its own entry stays while it listens.
        let sub = pulls.subscribe("other", 0);
        assert!(!pulls.entries().contains_key("k"));
        drop(sub);
        pulls.start("k").finish(Ok("x"));
        assert!(!pulls.entries().contains_key("other"));
        assert!(
            pulls.entries().contains_key("k"),
            "kept for late subscribers"
        );
    }

    #[test]
    fn keys_are_normalised_references() {
        assert_eq!(
            pull_key("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert!(pull_key("UPPER/case").is_err());
    }
}
