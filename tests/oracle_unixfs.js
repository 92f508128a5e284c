// Independent oracle for tests/test_cid.py: the CIDs computed by the npm package ipfs-only-hash
// and the js UnixFS importer it is built on (not by the kit).
// stdin: JSON list of jobs {path, options, hidden}; stdout: JSON list of root CIDs.
// Directories are walked here (entries starting with "." skipped unless hidden); symlinks become
// UnixFS Symlink nodes encoded as go-unixfs SymlinkData does (Type and Data, no filesize).
'use strict'

const fs = require('fs')
const path = require('path')
const Hash = require('ipfs-only-hash')
const { importer } = require('ipfs-unixfs-importer')
const defaultDagBuilder = require('ipfs-unixfs-importer/src/dag-builder')
const persist = require('ipfs-unixfs-importer/src/utils/persist')
const { Data: PBData } = require('ipfs-unixfs/src/unixfs')
const { DAGNode } = require('ipld-dag-pb')

const noBlocks = {
  get: async () => { throw new Error('oracle never reads blocks') },
  put: async () => { throw new Error('oracle never writes blocks') }
}

function * walk (abs, rel, hidden) {
  const st = fs.lstatSync(abs)
  if (st.isSymbolicLink()) { yield { path: rel, symlink: fs.readlinkSync(abs) }; return }
  if (st.isFile()) { yield { path: rel, content: fs.createReadStream(abs) }; return }
  const names = fs.readdirSync(abs).filter(name => hidden || !name.startsWith('.'))
  if (names.length === 0) { yield { path: rel }; return }
  for (const name of names) yield * walk(path.join(abs, name), rel + '/' + name, hidden)
}

async function symlinkNode (entry, options) {
  const data = PBData.encode({ Type: PBData.DataType.Symlink, Data: Buffer.from(entry.symlink) }).finish()
  const buffer = new DAGNode(data).serialize()
  const cid = await persist(buffer, noBlocks, { codec: 'dag-pb', cidVersion: options.cidVersion, onlyHash: true })
  return { cid, path: entry.path, unixfs: undefined, size: buffer.length }
}

async function * dagBuilder (source, block, options) {
  for await (const entry of source) {
    if (entry.symlink !== undefined) yield () => symlinkNode(entry, options)
    else yield * defaultDagBuilder([entry], block, options)
  }
}

async function rootCid (job) {
  const target = path.resolve(job.path)
  const options = { ...job.options, onlyHash: true }
  if (fs.statSync(target).isFile() && !options.wrapWithDirectory) {
    return Hash.of(fs.createReadStream(target), options)
  }
  let last
  const entries = walk(target, path.basename(target), !!job.hidden)
  for await (const entry of importer(entries, noBlocks, { ...options, dagBuilder })) last = entry
  return String(last.cid)
}

async function main () {
  const jobs = JSON.parse(fs.readFileSync(0, 'utf8'))
  const cids = []
  for (const job of jobs) cids.push(await rootCid(job))
  process.stdout.write(JSON.stringify(cids))
}

main().catch(error => { console.error(error); process.exit(1) })
