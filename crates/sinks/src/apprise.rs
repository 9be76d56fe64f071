//! Apprise-style URLs (skeleton).

use crate::{DestinationConfig, Error};

pub fn parse(url: &str) -> Result<DestinationConfig, Error> {
    Err(Error::Invalid(format!("not implemented yet: {url}")))
}
