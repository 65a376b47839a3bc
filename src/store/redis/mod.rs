//! The Redis store: the same `Store` contract on Redis, for several nodes.
//! (Being written: see issue 3.)

pub mod keys;

use crate::config::RedisSettings;

pub struct RedisStore;

impl RedisStore {
    pub async fn connect(_settings: &RedisSettings, _retention: u64) -> anyhow::Result<RedisStore> {
        anyhow::bail!("the Redis store is not built yet")
    }
}
