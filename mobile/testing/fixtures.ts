import type { LikeAnswer, Post } from '../src/api/client';
import { ApiError } from '../src/api/errors';
import type { LikeTransport } from '../src/likes/store';

export function post(id: number, likeCount = 5, likedByMe = false, likeVersion = 100): Post {
  return {
    id,
    author: { id: 1, username: 'ann' },
    caption: `post ${id}`,
    imageUrl: `/media/${id}.jpg`,
    thumbnailUrl: `/media/${id}_t.jpg`,
    width: 640,
    height: 480,
    createdAt: '2026-12-01T10:00:00Z',
    likeCount,
    likeVersion,
    likedByMe,
  };
}

/** A like transport whose answers the test gives, one call at a time. */
export class Scripted implements LikeTransport {
  calls: { id: number; on: boolean; resolve: (a: LikeAnswer) => void; reject: (e: unknown) => void }[] = [];
  reads: number[] = [];
  readAnswer: Post | null = null;

  like(id: number, on: boolean): Promise<LikeAnswer> {
    return new Promise((resolve, reject) => this.calls.push({ id, on, resolve, reject }));
  }

  post(id: number): Promise<Post> {
    this.reads.push(id);
    return this.readAnswer ? Promise.resolve(this.readAnswer) : Promise.reject(new ApiError(0, 'network', 'down'));
  }

  /** Answers the oldest call. */
  answer(a: Partial<LikeAnswer> & { likeCount: number; version: number }) {
    const c = this.calls.shift();
    if (!c) throw new Error('no call to answer');
    c.resolve({ liked: c.on, ...a });
  }

  fail(err: unknown) {
    const c = this.calls.shift();
    if (!c) throw new Error('no call to fail');
    c.reject(err);
  }
}

export const flush = () => new Promise((r) => setTimeout(r, 0));
