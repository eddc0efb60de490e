import { describe, expect, it } from "vitest";
import { checkRoomToStart, MIN_FREE_BYTES, VolumeFullError } from "../../api-shim/src/store/sqlite-space.ts";

// The start's room check multiplies free blocks by the file system's own block size, not 4 KiB.
describe("the volume check counts the file system's own block size", () => {
  it("a full volume with 1 KiB blocks (mke2fs's 'small' type) is refused; one with 64 KiB blocks and room is not", () => {
    const statfs = (bavail: number, bsize: number) => () => ({ bavail, bsize });
    // 8 MiB free in 1 KiB blocks: full, though 8192 blocks of 4 KiB would be 32 MiB.
    expect(() => checkRoomToStart("/data/shim.db", statfs(8192, 1024))).toThrow(VolumeFullError);
    // exactly 16 MiB in 64 KiB blocks: enough, though 256 blocks of 4 KiB would be 1 MiB.
    expect(checkRoomToStart("/data/shim.db", statfs(MIN_FREE_BYTES / 65536, 65536))).toBe(MIN_FREE_BYTES);
  });
});

