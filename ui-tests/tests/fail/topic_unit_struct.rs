use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("tick")]
#[derive(Serialize, Deserialize)]
struct Tick;

fn main() {}
