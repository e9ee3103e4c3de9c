// What the app checks before an upload, to spare a phone the bytes of a
// file the server would refuse anyway. The server still judges every file
// (by its bytes, not its name or declared type); its codes are described
// by `describe()`.

import { MAX_UPLOAD_BYTES } from '../api/client';

export const ACCEPTED_TYPES = ['image/jpeg', 'image/png', 'image/webp', 'image/gif'];
/** The server's `max_image_pixels` default. */
export const MAX_PIXELS = 40_000_000;
export const MAX_CAPTION = 2200;

export interface Picked {
  uri: string;
  fileName?: string | null;
  mimeType?: string | null;
  fileSize?: number | null;
  width: number;
  height: number;
  file?: Blob;
}

/** A sentence for a person when the file cannot go, else null. */
export function checkUpload(p: Picked, caption: string): string | null {
  if (p.fileSize && p.fileSize > MAX_UPLOAD_BYTES) {
    return `That image is ${(p.fileSize / 1024 / 1024).toFixed(1)} MB: the limit is 20 MB.`;
  }
  if (p.mimeType && !ACCEPTED_TYPES.includes(p.mimeType.toLowerCase())) {
    return 'That file isn’t an image Tally can take. Use a JPEG, PNG, WebP or GIF.';
  }
  if (p.width * p.height > MAX_PIXELS) {
    return `That image has ${Math.round((p.width * p.height) / 1e6)} megapixels: the limit is 40.`;
  }
  if ([...caption].length > MAX_CAPTION) return `Captions hold at most ${MAX_CAPTION} characters.`;
  return null;
}

/** A file name with an extension that matches the type (servers and pickers vary). */
export function uploadName(p: Picked): string {
  if (p.fileName) return p.fileName;
  const ext = (p.mimeType ?? 'image/jpeg').split('/')[1] ?? 'jpg';
  return `photo.${ext === 'jpeg' ? 'jpg' : ext}`;
}
