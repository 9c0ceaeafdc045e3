//! The daemon's side of the card for the applets' tests: its APDU exchange (61xx, 6Cxx, STORE
//! DATA chains) running over [`crate::world::Uicc::transmit`].

use std::{
    pin::pin,
    task::{Context, Poll, Waker},
};

use aiesim_apdu::{Command, Response, SelectP2, Transmit, channel, exchange, store_data_chained};

use super::Config;
use crate::world::{UiccError, World};

/// A world with the simulator's defaults.
pub fn world() -> World {
    crate::world::tests::world()
}

/// A world whose card is built from `config`.
pub fn configured(config: &Config) -> World {
    let mut world = world();
    world.uicc.configure_euicc(config).unwrap();
    world
}

/// The card answers at once, so every exchange completes in one poll.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the simulated card never makes an exchange wait"),
    }
}

struct Link<'a>(&'a mut World);

impl Transmit for Link<'_> {
    type Error = UiccError;

    fn transmit(&mut self, channel: u8, apdu: &[u8]) -> impl Future<Output = Result<Vec<u8>, UiccError>> + Send {
        std::future::ready(self.0.uicc.transmit(channel, apdu))
    }
}

/// One applet selected on its own logical channel, as the daemon opens it.
pub struct Card<'a> {
    world: &'a mut World,
    pub channel: u8,
}

impl<'a> Card<'a> {
    /// MANAGE CHANNEL, then SELECT `aid` on the new channel.
    pub fn open(world: &'a mut World, aid: &[u8]) -> Self {
        let opened = block_on(exchange(&mut Link(world), 0, &channel::open_command())).unwrap();
        let channel = channel::opened_channel(&opened).unwrap();
        let select = Command::select_by_aid(aid, SelectP2::Fci).unwrap();
        let selected = block_on(exchange(&mut Link(world), channel, &select)).unwrap();
        assert!(selected.is_ok(), "SELECT answered {}", selected.sw);
        Self { world, channel }
    }

    /// One command, with GET RESPONSE and re-sends as the daemon does them.
    pub fn send(&mut self, command: &Command) -> Response {
        block_on(exchange(&mut Link(self.world), self.channel, command)).unwrap()
    }

    /// An ES10 request as a STORE DATA chain.
    pub fn store_data(&mut self, payload: &[u8]) -> Response {
        block_on(store_data_chained(
            &mut Link(self.world),
            self.channel,
            aiesim_es10::STORE_DATA_CLA,
            payload,
        ))
        .unwrap()
    }

    pub fn world(&mut self) -> &mut World {
        self.world
    }
}
