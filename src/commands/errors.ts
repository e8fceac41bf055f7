import { Reply, type ReplyCode } from '../replies.js';
import { StorageError } from '../storage/types.js';

/**
 * The one mapping from a failure to an FTP reply. Storage drivers classify
 * their own errors; anything unclassified is a local error (451), so the
 * control connection always stays usable.
 */
export function replyForError(err: unknown): { code: ReplyCode; text: string } {
  if (!(err instanceof StorageError)) {
    return { code: Reply.LocalError, text: 'Requested action aborted: local error in processing.' };
  }
  switch (err.code) {
    case 'NotFound':
      return { code: Reply.FileUnavailable, text: 'No such file or directory.' };
    case 'Exists':
      return { code: Reply.FileUnavailable, text: 'File exists.' };
    case 'NotEmpty':
      return { code: Reply.FileUnavailable, text: 'Directory not empty.' };
    case 'NotADirectory':
      return { code: Reply.FileUnavailable, text: 'Not a directory.' };
    case 'IsADirectory':
      return { code: Reply.FileUnavailable, text: 'Is a directory.' };
    case 'Denied':
      return { code: Reply.FileUnavailable, text: 'Permission denied.' };
    case 'InvalidName':
      return { code: Reply.FileNameNotAllowed, text: `File name not allowed: ${err.message}.` };
    case 'InvalidRange':
      return { code: Reply.InvalidRestart, text: 'Invalid REST parameter.' };
    case 'QuotaExceeded':
      return { code: Reply.ExceededStorage, text: 'Exceeded storage allocation.' };
    case 'Unavailable':
      return { code: Reply.LocalError, text: 'Storage unavailable, try again later.' };
    case 'Unconfirmed':
      // Sending it again could store it twice (an APPE): the client must look first.
      return { code: Reply.LocalError, text: 'The storage did not confirm the upload; check the file (SIZE) before sending it again.' };
    case 'BackendRefused':
      // Never 550: the client's path is fine; the server's own credentials are not (logged at error level).
      return { code: Reply.LocalError, text: 'Storage refused the server\'s credentials; the administrator must fix the configuration.' };
    case 'Unsupported':
      return { code: Reply.FileUnavailable, text: `${err.message}.` };
    case 'Busy':
      return { code: Reply.FileUnavailableBusy, text: 'An upload or a rename is running there; try again once it is done.' };
  }
}
