import * as ImagePicker from 'expo-image-picker';
import { useRouter } from 'expo-router';
import { useRef, useState } from 'react';
import { Image, Platform, Pressable, ScrollView, StyleSheet, Text, TextInput, View } from 'react-native';
import { ApiError, describe } from '../../src/api/errors';
import { useApp } from '../../src/core/context';
import { colors } from '../../src/components/theme';
import { checkUpload, MAX_CAPTION, uploadName, type Picked } from '../../src/upload/check';

/** A new post: pick or take a photo, preview, caption, upload with progress. */
export default function Upload() {
  const { api, notify, posted } = useApp();
  const router = useRouter();
  const [picked, setPicked] = useState<Picked | null>(null);
  const [caption, setCaption] = useState('');
  const [progress, setProgress] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);
  const abort = useRef<(() => void) | null>(null);

  async function pick(camera: boolean) {
    setError(null);
    const ask = camera ? ImagePicker.requestCameraPermissionsAsync : ImagePicker.requestMediaLibraryPermissionsAsync;
    const permission = await ask();
    if (!permission.granted) {
      setError(camera ? 'Tally may not use the camera. Allow it in Settings.' : 'Tally may not read your photos. Allow it in Settings.');
      return;
    }
    const launch = camera ? ImagePicker.launchCameraAsync : ImagePicker.launchImageLibraryAsync;
    const result = await launch({ mediaTypes: ['images'], quality: 0.9, exif: false });
    if (result.canceled || !result.assets[0]) return;
    const a = result.assets[0];
    const p: Picked = { uri: a.uri, fileName: a.fileName, mimeType: a.mimeType, fileSize: a.fileSize, width: a.width, height: a.height, file: a.file };
    setPicked(p);
    setError(checkUpload(p, caption));
  }

  async function send() {
    if (!picked) return;
    const problem = checkUpload(picked, caption);
    if (problem) {
      setError(problem);
      return;
    }
    setError(null);
    setProgress(0);
    const job = api.upload({ uri: picked.uri, name: uploadName(picked), type: picked.mimeType ?? 'image/jpeg', file: picked.file }, caption, setProgress);
    abort.current = job.abort;
    try {
      const post = await job.done;
      notify('Posted.');
      posted();
      setPicked(null);
      setCaption('');
      router.push(`/post/${post.id}`);
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 'aborted')) setError(describe(err));
    } finally {
      abort.current = null;
      setProgress(null);
    }
  }

  const uploading = progress !== null;
  return (
    <ScrollView contentContainerStyle={styles.page} keyboardShouldPersistTaps="handled">
      <View style={styles.row}>
        <Pressable style={styles.button} onPress={() => void pick(false)} disabled={uploading} accessibilityRole="button" testID="pick">
          <Text style={styles.buttonText}>Choose a photo</Text>
        </Pressable>
        {Platform.OS !== 'web' ? (
          <Pressable style={styles.button} onPress={() => void pick(true)} disabled={uploading} accessibilityRole="button">
            <Text style={styles.buttonText}>Take a photo</Text>
          </Pressable>
        ) : null}
      </View>
      {picked ? (
        <Image source={{ uri: picked.uri }} style={[styles.preview, { aspectRatio: picked.width && picked.height ? picked.width / picked.height : 1 }]} accessibilityLabel="Preview of the photo to post" testID="preview" />
      ) : (
        <Text style={styles.muted}>JPEG, PNG, WebP or GIF, up to 20 MB and 40 megapixels.</Text>
      )}
      <TextInput
        value={caption}
        onChangeText={setCaption}
        placeholder="Write a caption…"
        multiline
        maxLength={MAX_CAPTION}
        style={styles.caption}
        accessibilityLabel="Caption"
        testID="caption"
      />
      {error ? <Text style={styles.error} accessibilityRole="alert" testID="upload-error">{error}</Text> : null}
      {uploading ? (
        <View accessibilityRole="progressbar" accessibilityValue={{ min: 0, max: 100, now: Math.round((progress ?? 0) * 100) }} accessibilityLabel="Upload progress">
          <View style={styles.track}>
            <View style={[styles.bar, { width: `${Math.round((progress ?? 0) * 100)}%` }]} />
          </View>
          <Pressable onPress={() => abort.current?.()} accessibilityRole="button">
            <Text style={styles.cancel}>Cancel</Text>
          </Pressable>
        </View>
      ) : (
        <Pressable style={[styles.button, styles.primary, !picked && styles.disabled]} onPress={() => void send()} disabled={!picked} accessibilityRole="button" accessibilityState={{ disabled: !picked }} testID="share">
          <Text style={styles.primaryText}>Share</Text>
        </Pressable>
      )}
    </ScrollView>
  );
}

const styles = StyleSheet.create({
  page: { padding: 16, gap: 12, backgroundColor: colors.bg, flexGrow: 1 },
  row: { flexDirection: 'row', gap: 12, flexWrap: 'wrap' },
  button: { paddingVertical: 12, paddingHorizontal: 16, borderRadius: 8, borderWidth: 1, borderColor: colors.accent, minHeight: 44, alignItems: 'center' },
  buttonText: { color: colors.accent, fontSize: 16, fontWeight: '600' },
  primary: { backgroundColor: colors.accent },
  primaryText: { color: '#fff', fontSize: 16, fontWeight: '600' },
  disabled: { opacity: 0.4 },
  preview: { width: '100%', borderRadius: 8, backgroundColor: '#eee' },
  muted: { color: colors.muted, fontSize: 15 },
  caption: { borderWidth: 1, borderColor: colors.border, borderRadius: 8, padding: 12, fontSize: 16, minHeight: 80, backgroundColor: colors.card, color: colors.text, textAlignVertical: 'top' },
  error: { color: colors.error, fontSize: 15 },
  track: { height: 8, backgroundColor: colors.border, borderRadius: 4, overflow: 'hidden' },
  bar: { height: 8, backgroundColor: colors.accent },
  cancel: { color: colors.accent, marginTop: 8, fontSize: 15 },
});
