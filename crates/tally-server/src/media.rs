//! Where image files live: a directory under the data dir, served at
//! `/media/{file}`. Names are random, so they are unguessable before a post
//! is public and never collide between nodes sharing a volume.

use std::path::{Path, PathBuf};

use rand::RngCore;

/// URL prefix under which media files are served.
pub const URL_PREFIX: &str = "/media";

#[derive(Debug, Clone)]
pub struct MediaStore {
    dir: PathBuf,
}

impl MediaStore {
    pub async fn open(dir: PathBuf) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(&dir).await?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh random file stem.
    pub fn new_stem() -> String {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Writes a file atomically (temp file, fsync, rename), so a crash never
    /// leaves a half-written image behind a post.
    pub async fn put(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut file = tokio::fs::File::create(&tmp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, self.dir.join(name)).await
    }

    /// Removes a file, ignoring one that is already gone.
    pub async fn remove(&self, name: &str) {
        if let Err(err) = tokio::fs::remove_file(self.dir.join(name)).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %err, file = name, "could not remove media file");
        }
    }

    pub fn url(name: &str) -> String {
        format!("{URL_PREFIX}/{name}")
    }
}
