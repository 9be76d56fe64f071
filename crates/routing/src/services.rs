//! The environment every avatar sees: the store, the directory, the live hub, the agents and
//! the avatar runtimes. Built once by [`Services::start`].

use std::sync::{Arc, OnceLock};

use tidings_bus::avatars::{Runtime, RuntimeConfig};
use tidings_bus::queue::IngestQueue;
use tidings_core::ids::user_avatar;
use tidings_sinks::{Sinks, SinksConfig};
use tidings_sources::feed::SchedulePolicy;
use tidings_sources::fetch::{FetchConfig, FetchError, Fetcher};
use tidings_store::{SecretBox, Store};

use crate::agents::live::LiveHub;
use crate::agents::outbox::{Outbox, OutboxConfig};
use crate::agents::{Agent, default_agents};
use crate::directory::Directory;
use crate::source::SourceAvatar;
use crate::user::{UserAvatar, UserMsg};

/// Runtime tuning for both avatar kinds, and the web sources' fetch and schedule settings.
#[derive(Debug, Clone, Default)]
pub struct ServicesConfig {
    pub users: RuntimeConfig,
    pub sources: RuntimeConfig,
    pub fetch: FetchConfig,
    pub schedule: SchedulePolicy,
    /// WebSub subscriptions; `None` when this server cannot be called back (no public URL).
    pub websub: Option<WebSubConfig>,
    /// Seals credentials at rest; `None` uses a key that lives as long as the process.
    pub secrets: Option<SecretBox>,
    /// The wire side of destinations; `None`: defaults (no mail relay, strict address rules).
    pub sinks: Option<SinksConfig>,
    pub outbox: OutboxConfig,
}

/// How sources subscribe at WebSub hubs.
#[derive(Debug, Clone)]
pub struct WebSubConfig {
    /// The public base URL hubs call back (`<base>/websub/<source id>`).
    pub callback_base: String,
    /// Lease asked of hubs.
    pub lease: std::time::Duration,
    /// Accept `X-Hub-Signature: sha1=...` from hubs that cannot do better.
    pub allow_sha1: bool,
}

pub struct Services {
    pub store: Store,
    pub directory: Arc<Directory>,
    pub live: Arc<LiveHub>,
    /// The HTTP client of feeds and pages (SSRF-safe).
    pub fetcher: Fetcher,
    pub schedule: SchedulePolicy,
    pub websub: Option<WebSubConfig>,
    /// Seals credentials (destinations, IMAP passwords, private feed secrets) at rest.
    pub secrets: SecretBox,
    /// Deliveries to destinations, queued per destination.
    pub outbox: Arc<Outbox>,
    queue: Arc<dyn IngestQueue>,
    users: OnceLock<Runtime<UserAvatar>>,
    sources: OnceLock<Runtime<SourceAvatar>>,
    agents: OnceLock<Vec<Arc<dyn Agent>>>,
    xmpp: OnceLock<Arc<crate::xmpp::XmppAgent>>,
}

impl Services {
    /// Builds the services, starts both runtimes' reminder loops and the presence forwarder.
    pub fn start(
        store: Store,
        directory: Arc<Directory>,
        queue: Arc<dyn IngestQueue>,
        cfg: ServicesConfig,
    ) -> Result<Arc<Services>, FetchError> {
        let (live, mut presence) = LiveHub::new();
        let secrets = cfg.secrets.unwrap_or_else(SecretBox::ephemeral);
        let sinks = Sinks::new(cfg.sinks.unwrap_or_else(|| SinksConfig {
            fetch: FetchConfig::default(),
            relay: None,
        }))
        .map_err(|e| FetchError::Config(e.to_string()))?;
        let outbox = Outbox::start(store.clone(), secrets.clone(), sinks, cfg.outbox);
        let s = Arc::new(Services {
            store: store.clone(),
            directory,
            live,
            fetcher: Fetcher::new(cfg.fetch)?,
            schedule: cfg.schedule,
            websub: cfg.websub,
            secrets,
            outbox,
            queue,
            users: OnceLock::new(),
            sources: OnceLock::new(),
            agents: OnceLock::new(),
            xmpp: OnceLock::new(),
        });
        let users = Runtime::new(s.clone(), store.clone(), cfg.users);
        let sources = Runtime::new(s.clone(), store, cfg.sources);
        users.start_reminders();
        sources.start_reminders();
        let _ = s.users.set(users.clone());
        let _ = s.sources.set(sources);
        let _ = s.agents.set(default_agents(&s));
        tokio::spawn(async move {
            while let Some(p) = presence.recv().await {
                let msg = UserMsg::Presence {
                    channel: "web",
                    online: p.online,
                };
                if users.tell(&user_avatar(p.user_id), msg).await.is_err() {
                    break;
                }
            }
        });
        Ok(s)
    }

    /// The durable ingest queue, for sources that produce items themselves.
    pub fn queue(&self) -> &dyn IngestQueue {
        &*self.queue
    }

    pub fn users(&self) -> &Runtime<UserAvatar> {
        self.users.get().expect("set in Services::start")
    }

    pub fn sources(&self) -> &Runtime<SourceAvatar> {
        self.sources.get().expect("set in Services::start")
    }

    /// The XMPP connection, when the operator configured one.
    pub fn xmpp(&self) -> Option<&Arc<crate::xmpp::XmppAgent>> {
        self.xmpp.get()
    }

    /// Attaches the XMPP connection: IM deliveries go through it, its events to the avatars.
    pub fn attach_xmpp(
        self: &Arc<Self>,
        agent: Arc<crate::xmpp::XmppAgent>,
        inbound: tokio::sync::mpsc::Receiver<tidings_xmpp::Inbound>,
    ) {
        if self.xmpp.set(agent.clone()).is_err() {
            return;
        }
        self.outbox
            .sinks()
            .set_im(Arc::new(crate::xmpp::Transport(agent.clone())));
        tokio::spawn(agent.run(self.clone(), inbound));
    }

    pub fn agents(&self) -> &[Arc<dyn Agent>] {
        self.agents.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Passivates every avatar (sources first, since they send to users).
    pub async fn shutdown(&self) {
        self.outbox.shutdown();
        self.sources().shutdown().await;
        self.users().shutdown().await;
    }
}
