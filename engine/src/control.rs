//! Cross-core control: the only traffic between shards and the rest of the process.
//!
//! Each shard has a crossbeam receiver and an eventfd its ring polls; a sender pushes a message and
//! writes the eventfd, so a sleeping shard wakes. Only configuration/lifecycle commands and
//! statistics requests travel here; requests, connections and bytes never cross cores.

use crate::stats::EngineStats;
use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::sync::Arc;
use std::time::Duration;

/// One shard's statistics.
#[derive(Debug)]
pub struct ShardReport<St> {
    /// Shard number.
    pub shard: usize,
    /// Engine counters.
    pub engine: EngineStats,
    /// The service's own statistics.
    pub service: St,
}

/// A command for a shard.
pub enum Control<St> {
    /// Reply with a statistics snapshot.
    Stats(Sender<ShardReport<St>>),
    /// Stop accepting, let in-flight work finish, close idle connections, exit within `grace`.
    Stop {
        /// Deadline after which remaining connections are closed.
        grace: Duration,
    },
    /// A message for the service ([`crate::Service::on_control`]): configuration pushed to
    /// every shard, such as new TLS ticket keys.
    Service(Box<dyn std::any::Any + Send>),
}

/// A message could not be delivered because the shard is gone; the message comes back.
#[derive(Debug)]
pub struct SendError<T>(pub T);

/// The sending side of one shard's control channel.
pub struct ShardHandle<St> {
    tx: Sender<Control<St>>,
    wake: Arc<EventFd>,
}

impl<St> Clone for ShardHandle<St> {
    fn clone(&self) -> Self {
        ShardHandle {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }
}

/// The receiving side, owned by the shard.
pub(crate) struct ShardInbox<St> {
    pub rx: Receiver<Control<St>>,
    pub wake: Arc<EventFd>,
}

/// Creates a control channel for one shard.
pub(crate) fn channel<St>() -> std::io::Result<(ShardHandle<St>, ShardInbox<St>)> {
    let wake = Arc::new(
        EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(std::io::Error::from)?,
    );
    let (tx, rx) = crossbeam_channel::unbounded();
    Ok((
        ShardHandle {
            tx,
            wake: wake.clone(),
        },
        ShardInbox { rx, wake },
    ))
}

impl<St> ShardHandle<St> {
    /// Delivers a command and wakes the shard.
    pub fn send(&self, msg: Control<St>) -> Result<(), SendError<Control<St>>> {
        self.tx.send(msg).map_err(|e| SendError(e.0))?;
        let _ = self.wake.write(1);
        Ok(())
    }
}
