// Build the web console into dist/: one small entry bundle, xterm.js in a
// lazily loaded chunk, CSS in one file, and .gz siblings that kvmhostd
// serves to browsers that accept gzip. Usage: node build.mjs [--watch]
import * as esbuild from 'esbuild';
import { mkdir, readdir, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';

const out = 'dist';
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

await esbuild.build({
  entryPoints: { app: 'src/main.js', style: 'src/style.css' },
  bundle: true,
  splitting: true,
  format: 'esm',
  minify: true,
  sourcemap: false,
  target: ['chrome110', 'firefox115', 'safari16'],
  outdir: out,
  chunkNames: 'chunk-[hash]',
  logLevel: 'warning',
  legalComments: 'none',
});
await copyFile('src/index.html', join(out, 'index.html'));

let js = 0, jsGz = 0;
for (const name of await readdir(out)) {
  if (!/\.(js|css|html)$/.test(name)) continue;
  const data = await readFile(join(out, name));
  const gz = gzipSync(data, { level: 9 });
  await writeFile(join(out, name + '.gz'), gz);
  if (name.endsWith('.js')) { js += data.length; jsGz += gz.length; }
}
console.log(`web: built ${out}/ (all JavaScript ${(js / 1024).toFixed(1)} KiB, gzip ${(jsGz / 1024).toFixed(1)} KiB)`);
