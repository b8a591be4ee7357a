//! The message bus seam: how the replica sends. Receiving is the driving loop's job: it hands
//! each verified message to `Replica::on_message`.

use crate::message::Message;

pub trait MessageBus {
    /// Queue `message` for a replica. The bus keeps a reference (or copies); the caller may drop
    /// its own. Never delivers inside this call, not even to the sender itself.
    fn send_to_replica(&mut self, replica: u8, message: &Message);
    fn send_to_client(&mut self, client: u128, message: &Message);
}
