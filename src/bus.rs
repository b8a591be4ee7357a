//! The message bus seam: how the replica sends. Receiving is the driving loop's job: it hands
//! each verified message to `Replica::on_message`.

use crate::message::Message;

pub trait MessageBus {
    /// Queue `message` for a replica. The bus keeps a reference (or copies); the caller may drop
    /// its own. Never delivers inside this call, not even to the sender itself.
    fn send_to_replica(&mut self, replica: u8, message: &Message);
    fn send_to_client(&mut self, client: u128, message: &Message);

    /// Whether a connection to `replica` is up, as far as the bus knows. A hint, never used for
    /// safety: a closed connection is news that a peer's process may be gone, where silence is
    /// not (the replica suspects its primary sooner on it, `primary_disconnected`). A bus that
    /// cannot tell says true.
    fn connected_to_replica(&self, replica: u8) -> bool {
        let _ = replica;
        true
    }
}
