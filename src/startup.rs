//! STUB (being written): building and running the application.
use crate::config::Settings;

pub struct Application {
    port: u16,
}

#[derive(Clone)]
pub struct Stopper;

impl Stopper {
    /// Graceful stop: sessions closed with 1001, in-flight requests finished.
    pub async fn stop(&self) {}
}

impl Application {
    pub async fn build(_settings: Settings) -> anyhow::Result<Application> {
        Ok(Application { port: 0 })
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn stopper(&self) -> Stopper {
        Stopper
    }
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        Ok(())
    }
}
